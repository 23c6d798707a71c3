"""The NCT06155604 rules (cds/trials/nct06155604/rules.py), path by path, on small records."""

from __future__ import annotations

from typing import Any

import pytest

from cds.engine import evaluate
from cds.engine.model import Flag, Status
from cds.engine.trial import set_strict
from cds.trials.nct06155604 import TRIAL
from tests.engine import builders as b

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN
EVERYTHING = (
    "Patient",
    "Condition",
    "Observation",
    "Procedure",
    "DiagnosticReport",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
)


def base() -> list[dict[str, Any]]:
    """A likely candidate on AS_OF (every criterion favourable)."""
    return [
        b.patient(birth="1985-06-20"),
        b.condition("36402006", onset="2019-05-10"),
        b.procedure("48426002", 2000, display="Fine needle biopsy of kidney"),
        b.obs("98979-8", 42, "mL/min/{1.73_m2}"),
        b.sledai(2),
        b.obs("13945-1", 2, "/[HPF]"),
        b.obs("5821-4", 1, "/[HPF]"),
        b.obs("51790-4", 0, "/[HPF]"),
        b.obs("2890-2", 250, "mg/g"),
        b.med_statement("198142", "prednisoLONE 5 MG Oral Tablet", 500, b.dosage(1)),
        b.med_statement("200060", "mycophenolate mofetil 500 MG Oral Tablet", 500, b.dosage(1, freq=2)),
    ]


def result(criterion: str, resources: list[dict[str, Any]], searched: tuple[str, ...] = EVERYTHING) -> Any:
    set_strict(True)
    try:
        report = evaluate(resources, patient_id=b.PID, as_of=b.AS_OF, searched=searched, trial=TRIAL)
    finally:
        set_strict(False)
    return report.by_id(criterion)


def status(criterion: str, resources: list[dict[str, Any]], searched: tuple[str, ...] = EVERYTHING) -> Status:
    s: Status = result(criterion, resources, searched).status
    return s


def without(resources: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    """The resources minus those coded `code` (Condition/Procedure/Observation code or medication code)."""

    def codes(r: dict[str, Any]) -> set[str]:
        concept = r.get("code") or r.get("medicationCodeableConcept") or {}
        return {c.get("code") for c in concept.get("coding", [])}

    return [r for r in resources if code not in codes(r)]


def test_the_base_record_is_a_likely_candidate() -> None:
    set_strict(True)
    try:
        report = evaluate(base(), patient_id=b.PID, as_of=b.AS_OF, searched=EVERYTHING, trial=TRIAL)
    finally:
        set_strict(False)
    assert report.verdict.value == "likely-candidate"


# ------------------------------------------------------------------ inc-ln-biopsy


def test_ln_biopsy_unknown_without_conditions() -> None:
    searched = tuple(t for t in EVERYTHING if t != "Condition")
    assert status("inc-ln-biopsy", base(), searched) is UNKNOWN


def test_ln_biopsy_not_met_without_any_lupus_nephritis() -> None:
    assert status("inc-ln-biopsy", without(base(), "36402006")) is NOT_MET


def test_ln_biopsy_a_qualifying_class_wins_over_an_earlier_class_ii() -> None:
    transformed = [*base(), b.condition("4676006", onset="2015-01-01")]
    assert status("inc-ln-biopsy", transformed) is MET


def test_ln_biopsy_class_named_in_the_diagnosis_text() -> None:
    ln = b.condition("x", system="urn:local")
    ln["code"] = {"text": "Lupus nephritis class V (biopsy 2020)"}
    assert status("inc-ln-biopsy", [*without(base(), "36402006"), ln]) is MET


def test_ln_biopsy_report_naming_another_class_is_not_met() -> None:
    ln = b.condition("M32.14", system=b.ICD)
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr-1",
        "status": "final",
        "subject": {"reference": f"Patient/{b.PID}"},
        "code": {"text": "Renal biopsy report"},
        "conclusionCode": [{"coding": [{"system": b.SCT, "code": "4676006"}]}],
        "effectiveDateTime": b.ago(900),
    }
    resources = [*without(without(base(), "36402006"), "48426002"), ln, report]
    assert status("inc-ln-biopsy", resources) is NOT_MET
    report["conclusionCode"] = [{"coding": [{"system": b.SCT, "code": "52042003"}]}]
    assert status("inc-ln-biopsy", resources) is MET
    report["status"] = "entered-in-error"
    assert status("inc-ln-biopsy", resources) is UNKNOWN  # LN without biopsy evidence


def test_ln_biopsy_unconfirmed_lupus_nephritis_is_review() -> None:
    ln = b.condition("68815009", verification="unconfirmed")
    assert status("inc-ln-biopsy", [*without(base(), "36402006"), ln]) is UNKNOWN


def test_ln_biopsy_without_procedure_data_is_unknown() -> None:
    ln = b.condition("68815009")
    searched = tuple(t for t in EVERYTHING if t != "Procedure")
    assert status("inc-ln-biopsy", [*without(base(), "36402006"), ln], searched) is UNKNOWN


def test_ln_biopsy_with_a_biopsy_and_no_class_is_flagged_proxy() -> None:
    ln = b.condition("68815009")
    r = result("inc-ln-biopsy", [*without(base(), "36402006"), ln])
    assert r.status is MET
    assert any(Flag.PROXY in e.flags for e in r.evidence)


# ------------------------------------------------------------------ inc-ckd


@pytest.mark.parametrize(
    ("value", "comparator", "expected"),
    [(14, "<", NOT_MET), (60, "<=", UNKNOWN), (15, ">=", UNKNOWN), (61, ">", NOT_MET), (30, None, MET)],
)
def test_ckd_comparators(value: float, comparator: str | None, expected: Status) -> None:
    egfr = b.obs("98979-8", value, "mL/min/{1.73_m2}", comparator=comparator)
    assert status("inc-ckd", [*without(base(), "98979-8"), egfr]) is expected


def test_ckd_simultaneous_results_that_disagree_are_unknown() -> None:
    resources = [*base(), b.obs("98979-8", 70, "mL/min/{1.73_m2}")]
    assert status("inc-ckd", resources) is UNKNOWN


def test_ckd_creatinine_without_an_exact_birth_date_is_not_derived() -> None:
    resources = [b.patient(birth="1985"), *without(base(), "98979-8")[1:], b.obs("2160-0", 1.5, "mg/dL")]
    assert status("inc-ckd", resources) is UNKNOWN


def test_ckd_unknown_without_observations() -> None:
    searched = tuple(t for t in EVERYTHING if t != "Observation")
    assert status("inc-ckd", base(), searched) is UNKNOWN


def test_ckd_a_derived_egfr_outside_the_range_is_not_met() -> None:
    resources = [*without(base(), "98979-8"), b.obs("2160-0", 0.7, "mg/dL")]
    r = result("inc-ckd", resources)
    assert r.status is NOT_MET
    assert Flag.DERIVED in r.evidence[0].flags


# ------------------------------------------------------------------ inc-quiescent


def test_quiescent_from_a_questionnaire_total() -> None:
    form = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr-1",
        "status": "completed",
        "subject": {"reference": f"Patient/{b.PID}"},
        "questionnaire": "https://github.com/nct04582136-cds/Questionnaire/sledai-2k",
        "authored": b.ago(5),
        "item": [{"linkId": "total", "text": "SLEDAI-2K total", "answer": [{"valueInteger": 2}]}],
    }
    resources = [*without(base(), "SLEDAI-2K"), form]
    assert status("inc-quiescent", resources, (*EVERYTHING, "QuestionnaireResponse")) is MET
    form["item"] = [{"linkId": "total", "text": "SLEDAI-2K total", "answer": [{"valueInteger": 6}]}]
    assert status("inc-quiescent", resources, (*EVERYTHING, "QuestionnaireResponse")) is NOT_MET


def test_quiescent_proteinuria_without_a_total_is_not_met() -> None:
    resources = [*without(without(base(), "SLEDAI-2K"), "2890-2"), b.obs("2890-2", 900, "mg/g")]
    assert status("inc-quiescent", resources) is NOT_MET


def test_quiescent_without_a_total_is_unknown_even_with_a_clean_renal_domain() -> None:
    r = result("inc-quiescent", without(base(), "SLEDAI-2K"))
    assert r.status is UNKNOWN
    assert {i.id for i in r.items} == {"urinary-casts", "hematuria", "proteinuria", "pyuria"}


def test_quiescent_a_total_below_four_with_casts_is_review() -> None:
    resources = [*without(base(), "51790-4"), b.obs("51790-4", 2, "/[HPF]")]
    assert status("inc-quiescent", resources) is UNKNOWN


# ------------------------------------------------------------------ inc-stable-regimen


def test_regimen_mmf_and_aza_together_is_not_a_listed_regimen() -> None:
    aza = b.med_statement("197388", "azathioprine 50 MG Oral Tablet", 500, b.dosage(2))
    assert status("inc-stable-regimen", [*base(), aza]) is NOT_MET


def test_regimen_no_steroid_with_a_stale_medication_list_is_unknown() -> None:
    resources = [
        b.patient(birth="1985-06-20"),
        *[r for r in base()[1:] if r["resourceType"] != "MedicationStatement"],
        b.med_statement("979092", "Hydroxychloroquine Sulfate 200 MG Oral Tablet", 900, b.dosage(1), "completed", 400),
    ]
    assert status("inc-stable-regimen", resources) is UNKNOWN


def test_regimen_unknown_dose_is_unknown() -> None:
    pred = b.med_statement("8638", "prednisolone", 500)
    resources = [*without(base(), "198142"), pred]
    assert status("inc-stable-regimen", resources) is UNKNOWN


def test_regimen_prednisolone_alone_is_met() -> None:
    assert status("inc-stable-regimen", without(base(), "200060")) is MET


def test_regimen_hydroxychloroquine_is_allowed() -> None:
    hcq = b.med_statement("979092", "Hydroxychloroquine Sulfate 200 MG Oral Tablet", 600, b.dosage(1, freq=2))
    assert status("inc-stable-regimen", [*base(), hcq]) is MET


def test_regimen_a_biologic_named_in_text_is_not_met() -> None:
    rtx = b.med_admin(None, "rituximab 1000 MG infusion", 60, 1000, route="intravenous")
    assert status("inc-stable-regimen", [*base(), rtx]) is NOT_MET


# ------------------------------------------------------------------ exc-ckd5-rrt


def test_rrt_unknown_without_conditions_or_procedures() -> None:
    searched = tuple(t for t in EVERYTHING if t != "Procedure")
    assert status("exc-ckd5-rrt", base(), searched) is UNKNOWN


def test_rrt_unconfirmed_dialysis_status_is_review() -> None:
    dialysis = b.condition("Z99.2", system=b.ICD, verification="provisional")
    assert status("exc-ckd5-rrt", [*base(), dialysis]) is UNKNOWN


def test_rrt_kidney_transplant_procedure_ever_is_met() -> None:
    assert status("exc-ckd5-rrt", [*base(), b.procedure("70536003", 3000)]) is MET


def test_rrt_a_resolved_dialysis_status_is_review() -> None:
    dialysis = b.condition("Z99.2", system=b.ICD, clinical="resolved", abatementDateTime=b.ago(200))
    assert status("exc-ckd5-rrt", [*base(), dialysis]) is UNKNOWN


# ------------------------------------------------------------------ exc-frequent-uti


def _uti(days_ago: int, **kw: Any) -> dict[str, Any]:
    return b.condition("68566005", onset=b.ago(days_ago), clinical="resolved", **kw)


def test_uti_events_within_fourteen_days_are_one_episode() -> None:
    assert status("exc-frequent-uti", [*base(), _uti(40), _uti(30)]) is NOT_MET


def test_uti_undated_record_is_review() -> None:
    assert status("exc-frequent-uti", [*base(), _uti(30), b.condition("N39.0", system=b.ICD, onset=None)]) is UNKNOWN


def test_uti_unconfirmed_episode_reaching_the_threshold_is_review() -> None:
    resources = [*base(), _uti(30), _uti(100, verificationStatus=None)]
    resources[-1]["verificationStatus"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "unconfirmed"}]
    }
    assert status("exc-frequent-uti", resources) is UNKNOWN


def test_uti_recurrent_diagnosis_is_met() -> None:
    recurrent = b.condition("x", system="urn:local")
    recurrent["code"] = {"text": "Recurrent urinary tract infection"}
    assert status("exc-frequent-uti", [*base(), recurrent]) is MET


def test_uti_without_medication_data_is_unknown() -> None:
    searched = ("Patient", "Condition", "Observation", "Procedure", "DiagnosticReport")
    assert status("exc-frequent-uti", base(), searched) is UNKNOWN


def test_uti_an_antibiotic_for_another_reason_is_not_an_episode() -> None:
    abx = b.med_request(None, "nitrofurantoin 100 MG Oral Capsule", 100, status="completed")
    abx["reasonCode"] = [{"text": "wound infection"}]
    assert status("exc-frequent-uti", [*base(), _uti(30), abx]) is NOT_MET
    abx["reasonCode"] = [{"coding": [{"system": b.ICD, "code": "N39.0"}]}]
    assert status("exc-frequent-uti", [*base(), _uti(30), abx]) is MET


# ------------------------------------------------------------------ code-based exclusions


@pytest.mark.parametrize(
    ("criterion", "code", "system", "expected"),
    [
        ("exc-other-gn", "236403004", b.SCT, MET),
        ("exc-other-gn", "N04.21", b.ICD, MET),
        ("exc-other-gn", "N05.4", b.ICD, NOT_MET),  # a morphology LN shares: not another disease
        ("exc-other-gn", "M31.7", b.ICD, UNKNOWN),
        ("exc-t1dm", "46635009", b.SCT, MET),
        ("exc-t1dm", "E11.9", b.ICD, NOT_MET),
        ("exc-ketoacidosis", "E10.10", b.ICD, MET),
        ("exc-ckd5-rrt", "433146000", b.SCT, UNKNOWN),
        ("exc-ckd5-rrt", "Z49.31", b.ICD, MET),
    ],
)
def test_coded_conditions(criterion: str, code: str, system: str, expected: Status) -> None:
    assert status(criterion, base()) is NOT_MET
    assert status(criterion, [*base(), b.condition(code, system=system, onset="2018-01-01")]) is expected
