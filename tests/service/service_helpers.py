"""Builders for hook requests and FHIR data used by the service tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from cds.engine import evaluate
from cds.engine.model import Report
from cds.engine.record import READ_TYPES
from cds.service.alerts import GATE_QUERIES
from cds.service.prefetch import queries_for
from cds.trials.nct04582136 import TRIAL
from tests.fhir_json import searchset

FHIR = "http://fhir.test/fhir"
PID = "pat-7f3a9"
TOKEN = "tok-SECRET-4711"
AS_OF = date(2026, 11, 1)
SERVICE = "/cds-services/nct04582136-prescreen"

SNOMED = "http://snomed.info/sct"
ENGINE_TYPES = READ_TYPES
SEARCH_KEYS = {q.key: q.resource_type for q in queries_for(TRIAL) if not q.read}  # prefetch key -> type
GATE_KEYS = {q.key: q.resource_type for q in GATE_QUERIES}  # Consent, ResearchSubject, referral ServiceRequest


def patient(pid: str = PID, birth: str = "1990-04-01") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Testperson", "given": ["Ada"]}],
        "gender": "female",
        "birthDate": birth,
    }


def sle_condition(pid: str = PID, cid: str = "cond-sle") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": {"coding": [{"system": SNOMED, "code": "55464009", "display": "Systemic lupus erythematosus"}]},
        "onsetDateTime": "2020-03-01",
    }


def procedure(pid: str = PID, pid_: str = "proc-1") -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": pid_,
        "status": "completed",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"text": "Dental cleaning"},
        "performedDateTime": "2019-05-01",
    }


def outcome_resource(text: str = "warning") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "informational", "diagnostics": text}],
    }


def full_prefetch(pid: str = PID) -> dict[str, Any]:
    prefetch: dict[str, Any] = {"patient": patient(pid)}
    for key in (*SEARCH_KEYS, *GATE_KEYS):
        prefetch[key] = searchset()
    prefetch["conditions"] = searchset([sle_condition(pid)])
    return prefetch


def hook_request(
    prefetch: dict[str, Any] | None = None,
    *,
    fhir_server: str | None = FHIR,
    token: str | None = TOKEN,
    pid: str = PID,
    hook: str = "patient-view",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": pid},
    }
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Patient.read patient/Condition.read",
            "subject": "cds-service",
        }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


class RecordingEngine:
    """The real engine, recording what the service passed to it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.reports: list[Report] = []

    def __call__(
        self,
        resources: list[dict[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: frozenset[str],
        incomplete: tuple[str, ...],
    ) -> Report:
        self.calls.append(
            {
                "resources": resources,
                "patient_id": patient_id,
                "as_of": as_of,
                "searched": searched,
                "incomplete": incomplete,
            }
        )
        report = evaluate(resources, patient_id=patient_id, as_of=as_of, searched=set(searched), incomplete=incomplete)
        self.reports.append(report)
        return report

    @property
    def last(self) -> dict[str, Any]:
        assert self.calls, "the engine was not called"
        return self.calls[-1]

    def ids(self, resource_type: str) -> set[str]:
        return {r["id"] for r in self.last["resources"] if r.get("resourceType") == resource_type}
