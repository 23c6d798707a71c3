"""Tiny FHIR R4 JSON builders for engine tests (dates relative to AS_OF)."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

from cds.engine.definition import Policy
from cds.engine.record import READ_TYPES, build_record
from cds.engine.rules import Context

AS_OF = date(2026, 11, 1)
PID = "pt-test"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
_ids = itertools.count(1)


def ago(days: int) -> str:
    return (AS_OF - timedelta(days=days)).isoformat()


def nid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def patient(birth: str | None = "1988-04-12", gender: str = "female", **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "id": PID, "gender": gender, **extra}
    if birth is not None:
        p["birthDate"] = birth
    return p


def condition(
    code: str,
    system: str = SCT,
    onset: str | None = "2022-03-15",
    clinical: str | None = "active",
    verification: str = "confirmed",
    **extra: Any,
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "resourceType": "Condition",
        "id": nid("cond"),
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": system, "code": code}]},
        "verificationStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]
        },
        **extra,
    }
    if clinical is not None:
        c["clinicalStatus"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]
        }
    if onset is not None:
        c["onsetDateTime"] = onset
    return c


def obs(
    loinc: str,
    value: float | None,
    unit: str,
    days_ago: int = 12,
    status: str = "final",
    comparator: str | None = None,
    high: float | None = None,
    low: float | None = None,
    coded: str | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "id": nid("obs"),
        "status": status,
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "effectiveDateTime": ago(days_ago),
    }
    if text:
        o["code"] = {"text": text}
    if value is not None:
        q: dict[str, Any] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
        if comparator:
            q["comparator"] = comparator
        o["valueQuantity"] = q
    if coded is not None:
        o["valueCodeableConcept"] = {"coding": [{"system": SCT, "code": coded}]}
    rr: dict[str, Any] = {}
    if high is not None:
        rr["high"] = {"value": high, "unit": unit, "system": UCUM, "code": unit}
    if low is not None:
        rr["low"] = {"value": low, "unit": unit, "system": UCUM, "code": unit}
    if rr:
        o["referenceRange"] = [rr]
    return o


def sledai(total: float, days_ago: int = 7) -> dict[str, Any]:
    o = obs("x", total, "{score}", days_ago)
    o["code"] = {
        "coding": [{"system": "https://github.com/nct04582136-cds/CodeSystem/disease-activity", "code": "SLEDAI-2K"}],
        "text": "SLEDAI-2K total score",
    }
    return o


def dosage(
    qty: float,
    unit: str | None = "{tbl}",
    freq: int = 1,
    period: float = 1,
    period_unit: str = "d",
    route: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    dq: dict[str, Any] = {"value": qty}
    if unit:
        dq.update({"unit": unit, "system": UCUM, "code": unit})
    d: dict[str, Any] = {
        "timing": {"repeat": {"frequency": freq, "period": period, "periodUnit": period_unit}},
        "doseAndRate": [{"doseQuantity": dq}],
        **extra,
    }
    if route:
        d["route"] = {"text": route}
    return d


def med_statement(
    rxcui: str | None,
    display: str,
    start_days_ago: int | None,
    dose: dict[str, Any] | None = None,
    status: str = "active",
    end_days_ago: int | None = None,
) -> dict[str, Any]:
    coding = [{"system": RX, "code": rxcui, "display": display}] if rxcui else []
    m: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": nid("ms"),
        "status": status,
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": {"coding": coding, "text": display},
    }
    period: dict[str, str] = {}
    if start_days_ago is not None:
        period["start"] = ago(start_days_ago)
    if end_days_ago is not None:
        period["end"] = ago(end_days_ago)
    if period:
        m["effectivePeriod"] = period
    if dose is not None:
        m["dosage"] = [dose]
    return m


def med_request(
    rxcui: str | None,
    display: str,
    authored_days_ago: int,
    status: str = "active",
    dose: dict[str, Any] | None = None,
) -> dict[str, Any]:
    coding = [{"system": RX, "code": rxcui, "display": display}] if rxcui else []
    m: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": nid("mr"),
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": {"coding": coding, "text": display},
        "authoredOn": ago(authored_days_ago),
    }
    if dose is not None:
        m["dosageInstruction"] = [dose]
    return m


def med_admin(
    rxcui: str | None,
    display: str,
    days_ago: int,
    dose_mg: float | None = None,
    route: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    coding = [{"system": RX, "code": rxcui, "display": display}] if rxcui else []
    m: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": nid("ma"),
        "status": status,
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": {"coding": coding, "text": display},
        "effectiveDateTime": ago(days_ago),
    }
    d: dict[str, Any] = {}
    if dose_mg is not None:
        d["dose"] = {"value": dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}
    if route:
        d["route"] = {"text": route}
    if d:
        m["dosage"] = d
    return m


def procedure(code: str, days_ago: int, status: str = "completed", display: str = "procedure") -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": nid("proc"),
        "status": status,
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": SCT, "code": code, "display": display}]},
        "performedDateTime": ago(days_ago),
    }


def allergy(code: str, system: str = SCT, verification: str = "confirmed") -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "id": nid("alg"),
        "patient": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": system, "code": code}]},
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": verification,
                }
            ]
        },
    }


def base_record() -> list[dict[str, Any]]:
    """A record built to be a likely candidate on AS_OF."""
    return [
        patient(),
        condition("55464009"),
        sledai(10),
        obs("33799-8", 45, "[IU]/mL"),
        obs("4485-9", 75, "mg/dL", low=90, high=180),
        obs("4498-2", 12, "mg/dL", low=10, high=40),
        obs("6690-2", 5.2, "10*3/uL"),
        obs("1742-6", 25, "U/L", high=40),
        obs("1920-8", 22, "U/L", high=40),
        obs("1975-2", 0.6, "mg/dL", high=1.2),
        obs("2093-3", 180, "mg/dL"),
        obs("2571-8", 120, "mg/dL"),
        obs("18262-6", 100, "mg/dL"),
        obs("98979-8", 95, "mL/min/{1.73_m2}"),
        obs("2890-2", 300, "mg/g"),
        obs("2106-3", None, "", days_ago=3, coded="260385009"),
        med_statement("312617", "predniSONE 5 MG Oral Tablet", 153, dosage(2)),
        med_statement("979092", "Hydroxychloroquine Sulfate 200 MG Oral Tablet", 660, dosage(1, freq=2)),
        med_statement("314076", "lisinopril 10 MG Oral Tablet", 550, dosage(1)),
        procedure("73761001", 900, display="colonoscopy"),
        allergy("91936005"),
    ]


def rule_context(resources: list[dict[str, Any]], policy: Policy) -> Context:
    """A rule's context over `resources` (plus the test patient), every read type searched."""
    record = build_record([patient(), *resources], patient_id=PID, searched=READ_TYPES)
    return Context(record=record, as_of=AS_OF, policy=policy)
