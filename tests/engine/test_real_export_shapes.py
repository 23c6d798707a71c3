"""Shapes real EHR exports (Epic, Oracle Health, Synthea) use, each on the base candidate.

Every test starts from `fixtures/patients/base-candidate.json` (every criterion favourable) and
changes one resource into the shape a real export sends, then checks the criterion it feeds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cds.engine import evaluate
from cds.engine.model import Flag, Report
from tests.engine.builders import AS_OF, ago

Res = dict[str, Any]
PID = "base-candidate"
BASE: list[Res] = [
    e["resource"]
    for e in json.loads(
        (Path(__file__).resolve().parents[2] / "fixtures" / "patients" / f"{PID}.json").read_text(encoding="utf-8")
    )["entry"]
]
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
V3_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
SUBJECT = {"reference": f"Patient/{PID}"}


pytestmark = pytest.mark.usefixtures("strict_engine")


def record(
    change: Callable[[dict[str, Res]], None] | None = None, *extra: Res, drop: tuple[str, ...] = ()
) -> list[Res]:
    """The base candidate keyed by id suffix (`hcg`, `wbc`, ...), changed, plus extra resources."""
    keyed = {r["id"].removeprefix(f"{PID}-") if r["resourceType"] != "Patient" else "patient": copy.deepcopy(r)
             for r in BASE}  # fmt: skip
    for key in drop:
        del keyed[key]
    if change is not None:
        change(keyed)
    return [*keyed.values(), *extra]


def run(resources: list[Res]) -> Report:
    return evaluate(resources, patient_id=PID, as_of=AS_OF)


def status(resources: list[Res], cid: str) -> str:
    return run(resources).by_id(cid).status.value


def set_value(key: str, **value: Any) -> Callable[[dict[str, Res]], None]:
    """Replace an Observation's value[x] (and optionally other fields) with the given ones."""

    def change(k: dict[str, Res]) -> None:
        o = k[key]
        for field in ("valueQuantity", "valueCodeableConcept", "valueString", "valueInteger", "valueBoolean"):
            o.pop(field, None)
        for name, v in value.items():
            if v is None:
                o.pop(name, None)
            else:
                o[name] = v

    return change


def q(value: float, unit: str, code: str | None = None, comparator: str | None = None) -> Res:
    out: Res = {"value": value, "unit": unit}
    if code is not None:
        out.update({"system": UCUM, "code": code})
    if comparator:
        out["comparator"] = comparator
    return out


def lab(code: str, when: str, **fields: Any) -> Res:
    return {
        "resourceType": "Observation",
        "id": fields.pop("id"),
        "status": fields.pop("status", "final"),
        "subject": SUBJECT,
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": when,
        **fields,
    }


# --------------------------------------------------------------------------------- observations


def test_positive_pregnancy_test_as_value_string_excludes() -> None:
    r = record(set_value("hcg", valueString="POSITIVE", interpretation=None))
    result = run(r).by_id("exc-pregnancy")
    assert result.status.value == "met"
    assert result.evidence[0].reference == f"Observation/{PID}-hcg"


def test_negative_pregnancy_test_as_value_string_is_not_met() -> None:
    assert status(record(set_value("hcg", valueString="Negative", interpretation=None)), "exc-pregnancy") == "not_met"


@pytest.mark.parametrize(("code", "expected"), [("10828004", "met"), ("260373001", "met"), ("260415000", "not_met")])
def test_pregnancy_test_as_snomed_coded_value(code: str, expected: str) -> None:
    value = {"coding": [{"system": SCT, "code": code}]}
    assert (
        status(record(set_value("hcg", valueCodeableConcept=value, interpretation=None)), "exc-pregnancy") == expected
    )


def test_pregnancy_test_as_value_boolean_true_excludes() -> None:
    assert status(record(set_value("hcg", valueBoolean=True, interpretation=None)), "exc-pregnancy") == "met"


def test_pregnancy_interpretation_pos_without_value_excludes() -> None:
    interp = [{"coding": [{"system": V3_INTERP, "code": "POS"}]}]
    assert status(record(set_value("hcg", interpretation=interp)), "exc-pregnancy") == "met"


def test_indeterminate_pregnancy_test_is_unknown() -> None:
    r = record(set_value("hcg", valueString="Indeterminate", interpretation=None))
    assert status(r, "exc-pregnancy") == "unknown"


def test_egfr_value_string_over_60_without_unit_is_read_in_the_egfr_unit() -> None:
    result = run(record(set_value("egfr", valueString=">60"))).by_id("exc-severe-nephritis")
    assert result.status.value == "not_met"
    egfr_ev = next(e for e in result.evidence if e.reference.endswith("-egfr"))
    assert Flag.DERIVED in egfr_ev.flags
    assert Flag.COMPARATOR in egfr_ev.flags


def test_value_string_with_comparator_settles_a_threshold() -> None:
    assert status(record(set_value("alt", valueString="<5 U/L")), "exc-liver-enzymes") == "not_met"


def test_value_string_number_with_lab_unit_spelling() -> None:
    assert status(record(set_value("wbc", valueString="2.1 K/uL")), "exc-leukopenia") == "met"


def test_value_string_without_unit_for_a_lab_is_unknown() -> None:
    assert status(record(set_value("wbc", valueString="2.1")), "exc-leukopenia") == "unknown"


def test_titre_anti_dsdna_cannot_be_compared_with_iu_threshold() -> None:
    def change(k: dict[str, Res]) -> None:
        set_value("dsdna", valueString="1:640")(k)
        set_value("c3", valueQuantity=q(120, "mg/dL", "mg/dL"))(k)

    result = run(record(change)).by_id("inc-serology")
    assert result.status.value == "unknown"


def test_sledai_total_as_value_integer() -> None:
    assert status(record(set_value("sledai", valueInteger=10)), "inc-sledai") == "met"


def test_sledai_total_as_value_string() -> None:
    assert status(record(set_value("sledai", valueString="2")), "inc-sledai") == "not_met"


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (q(2.5, "K/uL"), "met"),
        (q(2.5, "Thousand/uL"), "met"),
        (q(2.5, "x10E3/uL"), "met"),
        (q(2.5, "10^9/L"), "met"),
        (q(2.5, "x10^9/L"), "met"),
        (q(2.5, "10*3/uL", "10*3/uL"), "met"),
        (q(2500, "/uL", "/uL"), "met"),
        (q(2500, "cells/uL"), "met"),
        (q(4.1, "K/uL"), "not_met"),
        (q(2.5, "10*3/uL", "K/uL"), "met"),  # a spelling sent as the UCUM code
    ],
)
def test_lab_unit_spellings_for_wbc(quantity: Res, expected: str) -> None:
    assert status(record(set_value("wbc", valueQuantity=quantity)), "exc-leukopenia") == expected


@pytest.mark.parametrize(
    ("key", "quantity", "criterion", "expected"),
    [
        ("c3", q(0.75, "g/l"), "inc-serology", "met"),
        ("bili", q(0.6, "mg/dl"), "exc-bilirubin-lipids", "not_met"),
        ("bili", q(10, "umol/L"), "exc-bilirubin-lipids", "not_met"),
        ("bili", q(60, "µmol/L"), "exc-bilirubin-lipids", "met"),
        ("chol", q(4.5, "mmol/L"), "exc-bilirubin-lipids", "not_met"),
        ("chol", q(12, "MMOL/L"), "exc-bilirubin-lipids", "met"),
    ],
)
def test_lab_unit_spellings_for_chemistry(key: str, quantity: Res, criterion: str, expected: str) -> None:
    assert status(record(set_value(key, valueQuantity=quantity)), criterion) == expected


def test_dsdna_in_iu_per_ml_spelling() -> None:
    def change(k: dict[str, Res]) -> None:
        set_value("dsdna", valueQuantity=q(45, "IU/mL"))(k)
        set_value("c3", valueQuantity=q(120, "mg/dL", "mg/dL"))(k)

    assert status(record(change), "inc-serology") == "met"


def test_unmappable_unit_is_unknown() -> None:
    assert status(record(set_value("wbc", valueQuantity=q(2.5, "bananas/uL"))), "exc-leukopenia") == "unknown"


def _alt(value: float, **rr: Any) -> Callable[[dict[str, Res]], None]:
    return set_value("alt", valueQuantity=q(value, "U/L", "U/L"), referenceRange=[rr])


def test_reference_range_text_used_instead_of_site_default() -> None:
    # 70 U/L: 1.75 x the site default 40 (met), but 1.25 x the lab's own "7-56" (not met)
    result = run(record(_alt(70, text="7-56"))).by_id("exc-liver-enzymes")
    assert result.status.value == "not_met"
    alt_ev = next(e for e in result.evidence if e.reference.endswith("-alt"))
    assert Flag.ULN_ASSUMED not in alt_ev.flags
    assert "ULN 56" in alt_ev.description


def test_reference_range_text_upper_bound_only() -> None:
    assert status(record(_alt(70, text="<40")), "exc-liver-enzymes") == "met"
    assert status(record(_alt(70, text="<= 50")), "exc-liver-enzymes") == "not_met"


def test_reference_range_text_with_its_own_unit() -> None:
    # 30 umol/L bilirubin = 1.75 mg/dL; the range text "0.0-1.2 mg/dL" gives ULN 1.2: 1.46 x ULN
    change = set_value("bili", valueQuantity=q(30, "umol/L", "umol/L"), referenceRange=[{"text": "0.0-1.2 mg/dL"}])
    assert status(record(change), "exc-bilirubin-lipids") == "not_met"


def test_reference_range_text_not_understood_falls_back_to_site_default() -> None:
    result = run(record(_alt(70, text="see lab comment"))).by_id("exc-liver-enzymes")
    assert result.status.value == "met"
    assert any(Flag.ULN_ASSUMED in e.flags for e in result.evidence)


def test_interpretation_code_is_shown_as_supporting_evidence() -> None:
    def change(k: dict[str, Res]) -> None:
        _alt(130, high=q(40, "U/L", "U/L"))(k)
        k["alt"]["interpretation"] = [{"coding": [{"system": V3_INTERP, "code": "HH"}]}]

    result = run(record(change)).by_id("exc-liver-enzymes")
    assert result.status.value == "met"
    assert "lab flag HH" in result.evidence[0].description


def test_panel_component_value_is_read() -> None:
    panel = lab(
        "58410-2",
        "2026-10-25",
        id="cbc-panel",
        component=[
            {"code": {"coding": [{"system": LOINC, "code": "718-7"}]}, "valueQuantity": q(12, "g/dL", "g/dL")},
            {"code": {"coding": [{"system": LOINC, "code": "6690-2"}]}, "valueQuantity": q(2.1, "K/uL")},
        ],
    )
    result = run(record(None, panel, drop=("wbc",))).by_id("exc-leukopenia")
    assert result.status.value == "met"
    assert result.evidence[0].reference == "Observation/cbc-panel"
    assert "component" in result.evidence[0].description


def _report(status_: str, *members: str, **extra: Any) -> Res:
    return {
        "resourceType": "DiagnosticReport",
        "id": "cbc-report",
        "status": status_,
        "subject": SUBJECT,
        "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
        "result": [{"reference": f"Observation/{m}"} for m in members],
        **extra,
    }


def test_diagnostic_report_member_names_the_report_as_evidence() -> None:
    result = run(record(set_value("wbc", valueQuantity=q(2.1, "K/uL")), _report("final", f"{PID}-wbc")))
    wbc = result.by_id("exc-leukopenia")
    assert wbc.status.value == "met"
    assert "DiagnosticReport/cbc-report" in wbc.evidence[0].description


def test_entered_in_error_report_withdraws_its_results() -> None:
    r = record(set_value("wbc", valueQuantity=q(2.1, "K/uL")), _report("entered-in-error", f"{PID}-wbc"))
    assert status(r, "exc-leukopenia") == "unknown"


@pytest.mark.parametrize(("report_status", "member_status", "expected"), [
    ("preliminary", "final", "met"),  # the member's own usable status counts
    ("final", "preliminary", "unknown"),  # a preliminary result is never used
    ("partial", "amended", "met"),
])  # fmt: skip
def test_report_and_member_statuses(report_status: str, member_status: str, expected: str) -> None:
    def change(k: dict[str, Res]) -> None:
        set_value("wbc", valueQuantity=q(2.1, "K/uL"))(k)
        k["wbc"]["status"] = member_status

    assert status(record(change, _report(report_status, f"{PID}-wbc")), "exc-leukopenia") == expected


def test_report_member_without_its_own_date_takes_the_report_date() -> None:
    def change(k: dict[str, Res]) -> None:
        set_value("wbc", valueQuantity=q(2.1, "K/uL"))(k)
        del k["wbc"]["effectiveDateTime"]

    r = record(change, _report("final", f"{PID}-wbc", effectiveDateTime="2026-10-20T08:00:00-05:00"))
    assert status(r, "exc-leukopenia") == "met"
    assert status(record(change), "exc-leukopenia") == "unknown"


@pytest.mark.parametrize(
    ("obs_status", "usable"),
    [
        ("final", True),
        ("amended", True),
        ("corrected", True),
        ("preliminary", False),
        ("registered", False),
        ("cancelled", False),
        ("entered-in-error", False),
        ("unknown", False),
    ],
)
def test_observation_status_usability(obs_status: str, usable: bool) -> None:
    def change(k: dict[str, Res]) -> None:
        set_value("wbc", valueQuantity=q(2.1, "K/uL"))(k)
        k["wbc"]["status"] = obs_status

    assert status(record(change), "exc-leukopenia") == ("met" if usable else "unknown")


def _two_wbc(first: tuple[str, str, float], second: tuple[str, str, float]) -> list[Res]:
    return record(
        None,
        *[lab("6690-2", when, id=rid, valueQuantity=q(v, "K/uL")) for rid, when, v in (first, second)],
        drop=("wbc",),
    )


def test_latest_result_by_time_of_day_not_resource_id() -> None:
    # same day: the 14:00 result (id "a-...") is later than the 08:00 one (id "z-...")
    r = _two_wbc(
        ("z-wbc-morning", "2026-10-20T08:00:00-05:00", 2.1), ("a-wbc-afternoon", "2026-10-20T14:00:00-05:00", 5.0)
    )
    assert status(r, "exc-leukopenia") == "not_met"
    r = _two_wbc(
        ("z-wbc-morning", "2026-10-20T08:00:00-05:00", 5.0), ("a-wbc-afternoon", "2026-10-20T14:00:00-05:00", 2.1)
    )
    assert status(r, "exc-leukopenia") == "met"


def test_latest_result_compares_instants_across_time_zones() -> None:
    # 09:00+08:00 is 01:00Z; 06:00Z is later on the same calendar day
    r = _two_wbc(("b-wbc-shanghai", "2026-10-20T09:00:00+08:00", 5.0), ("c-wbc-utc", "2026-10-20T06:00:00Z", 2.1))
    assert status(r, "exc-leukopenia") == "met"


def test_latest_result_uses_effective_period_end_and_issued() -> None:
    period = lab("6690-2", "2026-10-20", id="p-wbc", valueQuantity=q(2.1, "K/uL"))
    del period["effectiveDateTime"]
    period["effectivePeriod"] = {"start": "2026-10-18T08:00:00Z", "end": "2026-10-21T08:00:00Z"}
    issued = lab("6690-2", "2026-10-20", id="i-wbc", valueQuantity=q(5.0, "K/uL"))
    del issued["effectiveDateTime"]
    issued["issued"] = "2026-10-20T10:00:00Z"
    assert status(record(None, period, issued, drop=("wbc",)), "exc-leukopenia") == "met"


def test_results_at_the_same_instant_that_disagree_are_unknown() -> None:
    r = _two_wbc(("x-wbc-1", "2026-10-20T08:00:00Z", 2.1), ("y-wbc-2", "2026-10-20T08:00:00Z", 5.0))
    assert status(r, "exc-leukopenia") == "unknown"


# --------------------------------------------------------------------------------- conditions


def _sle(**changes: Any) -> Callable[[dict[str, Res]], None]:
    def change(k: dict[str, Res]) -> None:
        c = k["sle"]
        for name, v in changes.items():
            if v is None:
                c.pop(name, None)
            else:
                c[name] = v

    return change


def _ver(code: str) -> Res:
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": code}]}


def _clin(code: str) -> Res:
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": code}]}


@pytest.mark.parametrize("verification", ["unconfirmed", "provisional", "differential"])
def test_unconfirmed_diagnosis_never_establishes_an_inclusion(verification: str) -> None:
    report = run(record(_sle(verificationStatus=_ver(verification))))
    assert report.by_id("inc-sle-diagnosis").status.value == "unknown"
    assert report.by_id("inc-sle-duration").status.value == "unknown"


def _condition(rid: str, code: str, system: str = SCT, **fields: Any) -> Res:
    return {
        "resourceType": "Condition",
        "id": rid,
        "subject": SUBJECT,
        "code": {"coding": [{"system": system, "code": code}]},
        **fields,
    }


@pytest.mark.parametrize("verification", ["unconfirmed", "provisional", "differential"])
def test_unconfirmed_exclusion_goes_to_review(verification: str) -> None:
    ra = _condition("ra", "69896004", clinicalStatus=_clin("active"), verificationStatus=_ver(verification))
    result = run(record(None, ra)).by_id("exc-other-ctd")
    assert result.status.value == "unknown"
    assert Flag.NEEDS_REVIEW in result.evidence[0].flags


@pytest.mark.parametrize(
    ("clinical", "expected"),
    [("active", "met"), ("remission", "unknown"), ("resolved", "not_met"), ("inactive", "not_met")],
)
def test_concomitant_means_now_for_other_connective_tissue_disease(clinical: str, expected: str) -> None:
    ra = _condition("ra", "69896004", clinicalStatus=_clin(clinical), verificationStatus=_ver("confirmed"))
    assert status(record(None, ra), "exc-other-ctd") == expected


def test_unconfirmed_pregnancy_condition_goes_to_review() -> None:
    preg = _condition("preg", "77386006", clinicalStatus=_clin("active"), verificationStatus=_ver("provisional"))
    assert status(record(None, preg), "exc-pregnancy") == "unknown"


def test_unconfirmed_malignancy_goes_to_review() -> None:
    cancer = _condition(
        "ca",
        "254837009",
        onsetDateTime="2026-01-01",
        clinicalStatus=_clin("active"),
        verificationStatus=_ver("differential"),
    )
    assert status(record(None, cancer), "exc-malignancy") == "unknown"


@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        ({"onsetPeriod": {"start": "2022-03-15"}}, "met"),
        ({"onsetPeriod": {"end": "2022-03-15"}}, "met"),
        ({"onsetAge": {"value": 30, "unit": "years", "system": UCUM, "code": "a"}}, "met"),
        ({"onsetAge": {"value": 38, "unit": "years", "system": UCUM, "code": "a"}}, "unknown"),  # 2026-04..2027-04
        ({"onsetRange": {"low": {"value": 25, "code": "a"}, "high": {"value": 30, "code": "a"}}}, "met"),
        ({"onsetString": "2019"}, "met"),
        ({"onsetString": "2026-10"}, "not_met"),
        ({"onsetString": "in childhood"}, "unknown"),
        ({"recordedDate": "2023-01-05"}, "met"),
    ],
)
def test_every_onset_form(onset: Res, expected: str) -> None:
    assert status(record(_sle(onsetDateTime=None, **onset)), "inc-sle-duration") == expected


@pytest.mark.parametrize("category", ["problem-list-item", "encounter-diagnosis"])
def test_problem_list_and_encounter_diagnosis_both_read(category: str) -> None:
    cat = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": category}]}]
    # an encounter diagnosis often carries no clinicalStatus
    report = run(record(_sle(category=cat, clinicalStatus=None)))
    assert report.by_id("inc-sle-diagnosis").status.value == "met"
    assert report.by_id("inc-sle-duration").status.value == "met"


# --------------------------------------------------------------------------------- medications


def _mtx_weekly(route: Res, mg: float = 20) -> Res:
    return {
        "resourceType": "MedicationStatement",
        "id": "mtx-sc",
        "status": "active",
        "subject": SUBJECT,
        "medicationCodeableConcept": {"text": "methotrexate 25 MG/ML Injectable Solution"},
        "effectivePeriod": {"start": "2025-01-01"},
        "dateAsserted": "2026-10-25",
        "dosage": [
            {
                "route": route,
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"}},
                "doseAndRate": [{"doseQuantity": q(mg, "mg", "mg")}],
            }
        ],
    }


@pytest.mark.parametrize(
    "route",
    [
        {"coding": [{"system": SCT, "code": "34206005", "display": "Subcutaneous route"}]},
        {"coding": [{"system": V3_ROUTE, "code": "SQ"}]},
        {"text": "Subcutaneous"},
        {"text": "subcut"},
    ],
)
def test_subcutaneous_route_is_systemic(route: Res) -> None:
    # 20 mg/week MTX > 15 mg/week cap: the cap fires because SC is systemic, never "cutaneous"
    result = run(record(None, _mtx_weekly(route))).by_id("inc-immunosuppressant-stable")
    assert result.status.value == "not_met"
    assert "route other-systemic" in result.evidence[-1].description or any(
        "other-systemic" in e.description for e in result.evidence
    )


def test_intramuscular_steroid_counts_toward_high_dose() -> None:
    ma = {
        "resourceType": "MedicationAdministration",
        "id": "mp-im",
        "status": "completed",
        "subject": SUBJECT,
        "medicationCodeableConcept": {"coding": [{"system": RX, "code": "6902", "display": "methylprednisolone"}]},
        "effectiveDateTime": ago(20),
        "dosage": {"route": {"coding": [{"system": SCT, "code": "78421000"}]}, "dose": q(125, "mg", "mg")},
    }
    assert status(record(None, ma), "exc-ivig-high-dose-steroid") == "met"


def _tacrolimus_request(route: Res | None = None, **extra: Any) -> Res:
    d: Res = {
        "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": q(1, "capsule", "{capsule}")}],
    }
    if route is not None:
        d["route"] = route
    return {
        "resourceType": "MedicationRequest",
        "id": "tac",
        "status": "active",
        "intent": "order",
        "subject": SUBJECT,
        "medicationCodeableConcept": {"coding": [{"system": RX, "code": "42316", "display": "tacrolimus"}]},
        "authoredOn": ago(10),
        "dosageInstruction": [d],
        **extra,
    }


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"coding": [{"system": SCT, "code": "6064005"}]}, "not_met"),  # topical
        ({"coding": [{"system": SCT, "code": "54485002"}]}, "not_met"),  # ophthalmic
        ({"coding": [{"system": V3_ROUTE, "code": "PO"}]}, "met"),
        ({"coding": [{"system": SCT, "code": "26643006"}]}, "met"),
        ({"coding": [{"system": V3_ROUTE, "code": "IVINJ"}]}, "met"),
    ],
)
def test_route_codes_decide_systemic_use(route: Res, expected: str) -> None:
    assert status(record(None, _tacrolimus_request(route)), "exc-calcineurin") == expected


def _dispense(rid: str, days_ago: int, supply: float | None, status_: str = "completed", **extra: Any) -> Res:
    md: Res = {
        "resourceType": "MedicationDispense",
        "id": rid,
        "status": status_,
        "subject": SUBJECT,
        "medicationCodeableConcept": {
            "coding": [{"system": RX, "code": "198377", "display": "tacrolimus 1 MG Oral Capsule"}]
        },
        "whenHandedOver": ago(days_ago),
        **extra,
    }
    if supply is not None:
        md["daysSupply"] = {"value": supply, "unit": "day", "system": UCUM, "code": "d"}
    return md


def test_medication_dispense_is_evidence_of_use() -> None:
    result = run(record(None, _dispense("tac-fill", 40, 30))).by_id("exc-calcineurin")
    # handed over 40 days ago with 30 days' supply: taken until 11 days ago, inside the 30-day window
    assert result.status.value == "met"
    assert result.evidence[0].reference == "MedicationDispense/tac-fill"


def test_medication_dispense_days_supply_bounds_the_exposure() -> None:
    assert status(record(None, _dispense("tac-fill", 90, 30)), "exc-calcineurin") == "not_met"


@pytest.mark.parametrize("status_", ["cancelled", "entered-in-error", "declined", "preparation"])
def test_medication_dispense_not_handed_over_is_ignored(status_: str) -> None:
    assert status(record(None, _dispense("tac-fill", 10, 30, status_)), "exc-calcineurin") == "not_met"


def _sirolimus_statement(**medication: Any) -> Res:
    return {
        "resourceType": "MedicationStatement",
        "id": "siro",
        "status": "completed",
        "subject": SUBJECT,
        "effectivePeriod": {"start": "2019-01-01", "end": "2019-06-01"},
        **medication,
    }


def test_contained_medication_reference() -> None:
    ms = _sirolimus_statement(
        contained=[
            {
                "resourceType": "Medication",
                "id": "m1",
                "code": {"coding": [{"system": RX, "code": "360110", "display": "sirolimus 2 MG Oral Tablet"}]},
            }
        ],
        medicationReference={"reference": "#m1"},
    )
    assert status(record(None, ms), "exc-sirolimus") == "met"


def test_medication_reference_to_a_medication_resource() -> None:
    med = {"resourceType": "Medication", "id": "med-rapamune", "code": {"text": "Rapamune 1 mg tablet"}}
    ms = _sirolimus_statement(medicationReference={"reference": "Medication/med-rapamune"})
    assert status(record(None, med, ms), "exc-sirolimus") == "met"


def test_medication_coded_only_by_its_ingredient() -> None:
    med = {
        "resourceType": "Medication",
        "id": "med-local",
        "code": {"coding": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.698288", "code": "12345"}]},
        "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RX, "code": "35302", "display": "sirolimus"}]}}],
    }
    ms = _sirolimus_statement(medicationReference={"reference": "Medication/med-local"})
    assert status(record(None, med, ms), "exc-sirolimus") == "met"


def _pred_sig(text: str) -> Callable[[dict[str, Res]], None]:
    def change(k: dict[str, Res]) -> None:
        k["pred"]["dosage"] = [{"text": text}]

    return change


@pytest.mark.parametrize(
    ("sig", "expected"),
    [
        ("Take 2 tablets (10 mg total) by mouth daily.", "met"),
        ("10 mg PO daily", "met"),
        ("5 mg PO BID", "met"),
        ("Take 1 tablet by mouth twice daily", "met"),  # 5 mg tablet x 2
        ("Take 5 tablets (25 mg total) by mouth daily", "not_met"),  # > 20 mg/day
        ("Take 1-2 tablets by mouth daily", "unknown"),
        ("Take as directed", "unknown"),
        ("Take 4 tablets daily for 5 days then 2 tablets daily", "unknown"),
        ("Take 2 tablets 5 mg by mouth daily", "unknown"),  # 5 mg: strength or dose?
    ],
)
def test_sig_text_read_only_when_the_dose_is_unambiguous(sig: str, expected: str) -> None:
    result = run(record(_pred_sig(sig))).by_id("inc-steroid-stable")
    assert result.status.value == expected
    if expected == "met":
        assert Flag.DERIVED in result.evidence[0].flags


def _immunoglobulin(text: str, route: Res | None) -> Res:
    ma: Res = {
        "resourceType": "MedicationAdministration",
        "id": "ig",
        "status": "completed",
        "subject": SUBJECT,
        "medicationCodeableConcept": {"text": text},
        "effectiveDateTime": ago(30),
    }
    if route is not None:
        ma["dosage"] = {"route": route}
    return ma


@pytest.mark.parametrize(
    ("text", "route", "expected"),
    [
        ("immune globulin intravenous (human) 10%", None, "met"),
        ("Privigen 10 g", {"coding": [{"system": SCT, "code": "47625008"}]}, "met"),
        ("Hizentra (immune globulin subcutaneous, human) 20%", None, "not_met"),
        ("immune globulin (human)", {"coding": [{"system": SCT, "code": "34206005"}]}, "not_met"),
        ("immune globulin (human)", {"coding": [{"system": SCT, "code": "78421000"}]}, "not_met"),
        ("Privigen 10 g", None, "unknown"),  # no route: may be intravenous
    ],
)
def test_ivig_means_intravenous_immunoglobulin(text: str, route: Res | None, expected: str) -> None:
    assert status(record(None, _immunoglobulin(text, route)), "exc-ivig-high-dose-steroid") == expected


def _antibiotic(rid: str, text: str, start_days_ago: int, timing: Res, **extra: Any) -> Res:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": "active",
        "intent": "order",
        "subject": SUBJECT,
        "medicationCodeableConcept": {"text": text},
        "authoredOn": ago(start_days_ago),
        "dosageInstruction": [{"timing": timing, "doseAndRate": [{"doseQuantity": q(1, "tablet", "{tbl}")}]}],
        **extra,
    }


TMP_SMX = "sulfamethoxazole 800 MG / trimethoprim 160 MG Oral Tablet"
DAILY = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}
MWF = {"repeat": {"dayOfWeek": ["mon", "wed", "fri"]}}


def test_prophylactic_tmp_smx_three_times_weekly_goes_to_review() -> None:
    result = run(record(None, _antibiotic("tmp", TMP_SMX, 5, MWF))).by_id("exc-infection")
    assert result.status.value == "unknown"
    assert any(Flag.NEEDS_REVIEW in e.flags for e in result.evidence)


def test_anti_infective_with_prophylaxis_reason_goes_to_review() -> None:
    reason = [{"text": "PJP prophylaxis"}]
    assert status(record(None, _antibiotic("tmp", TMP_SMX, 5, DAILY, reasonCode=reason)), "exc-infection") == "unknown"


def test_long_term_anti_infective_without_infection_goes_to_review() -> None:
    assert status(
        record(None, _antibiotic("doxy", "doxycycline 100 MG Oral Capsule", 200, DAILY)), "exc-infection"
    ) == ("unknown")


def test_antibiotic_treating_an_infection_is_met() -> None:
    reason = [{"coding": [{"system": SCT, "code": "68566005", "display": "Urinary tract infectious disease"}]}]
    amox = _antibiotic("amox", "amoxicillin 500 MG Oral Capsule", 5, DAILY, reasonCode=reason)
    assert status(record(None, amox), "exc-infection") == "met"


def test_short_antibiotic_course_without_reason_is_treatment() -> None:
    assert status(record(None, _antibiotic("amox", "amoxicillin 500 MG Oral Capsule", 5, DAILY)), "exc-infection") == (
        "met"
    )


# --------------------------------------------------------------------------------- patient sex

BIRTHSEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
SPCU = "http://hl7.org/fhir/StructureDefinition/patient-sexParameterForClinicalUse"


def _sex(gender: str | None, *extensions: Res) -> Callable[[dict[str, Res]], None]:
    def change(k: dict[str, Res]) -> None:
        p = k["patient"]
        if gender is None:
            p.pop("gender", None)
        else:
            p["gender"] = gender
        if extensions:
            p["extension"] = list(extensions)

    return change


def _spcu(code: str) -> Res:
    concept = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/sex-parameter-for-clinical-use", "code": code}]
    }
    return {"url": SPCU, "extension": [{"url": "value", "valueCodeableConcept": concept}]}


@pytest.mark.parametrize(
    ("gender", "extensions", "expected"),
    [
        ("male", (), "not_met"),
        ("male", ({"url": BIRTHSEX, "valueCode": "M"},), "not_met"),
        ("male", ({"url": BIRTHSEX, "valueCode": "F"},), "unknown"),  # conflicting: not taken as male
        ("male", (_spcu("female-typical"),), "unknown"),
        ("male", (_spcu("specified"),), "unknown"),
        ("unknown", ({"url": BIRTHSEX, "valueCode": "M"},), "not_met"),
        (None, (_spcu("male-typical"),), "not_met"),
        ("female", ({"url": BIRTHSEX, "valueCode": "F"},), "unknown"),
    ],
)
def test_birth_sex_and_sex_for_clinical_use_decide_pregnancy_with_gender(
    gender: str | None, extensions: tuple[Res, ...], expected: str
) -> None:
    # no pregnancy test in the record: only the patient's sex can settle the criterion
    assert status(record(_sex(gender, *extensions), drop=("hcg",)), "exc-pregnancy") == expected


# --------------------------------------------------------------------------------- allergies


@pytest.mark.parametrize(
    "code",
    [
        {"text": "Rapamune"},
        {"coding": [{"system": RX, "code": "258355", "display": "Rapamune"}]},
        {"coding": [{"system": RX, "code": "35302", "display": "sirolimus"}]},
    ],
)
def test_sirolimus_allergy_by_brand_name_or_ingredient_excludes(code: Res) -> None:
    allergy = {
        "resourceType": "AllergyIntolerance",
        "id": "rapa-allergy",
        "patient": SUBJECT,
        "code": code,
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}
            ]
        },
    }
    assert status(record(None, allergy), "exc-sirolimus") == "met"
