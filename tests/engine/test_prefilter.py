"""The raw pre-filter beyond Observations (`cds.engine.trial.Prefilter`): Conditions, Procedures,
allergies and medications by the value sets and drugs the criteria hold, reports by the results they
list. It changes nothing but speed: on every fixture of both trials and on the committed Synthea
corpus (real export shapes), the report equals the one from validating every resource."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds.bundles import BundleContents, read_bundle_file, read_inputs
from cds.engine import evaluate
from cds.engine.model import DataIssueKind
from cds.engine.record import build_record
from cds.engine.trial import Trial, set_strict
from cds.trials import get
from cds.trials.nct04582136 import TRIAL
from tests.engine import builders as b

ROOT = Path(__file__).resolve().parents[2] / "fixtures"
SECOND = get("nct06155604")
SECOND_DIR = ROOT / "nct06155604"
SYNTHEA = ROOT / "synthea"
AS_OF = date(2026, 11, 1)


@pytest.fixture(autouse=True)
def strict() -> Any:
    set_strict(True)
    yield
    set_strict(False)


def slow_report(trial: Trial, resources: Any, patient_id: str, searched: Any, as_of: date) -> dict[str, Any]:
    """Every resource validated, no pre-filter."""
    record = build_record(resources, patient_id=patient_id, searched=searched, keep=None)
    out: dict[str, Any] = trial.evaluate_record(record, as_of).to_json()
    return out


def test_both_trials_read_conditions_procedures_reports_and_medications_through_their_value_sets() -> None:
    assert {"Condition", "Procedure", "DiagnosticReport", "MedicationRequest"} <= set(SECOND._narrowed)
    assert {"Condition", "Procedure", "AllergyIntolerance", "DiagnosticReport", "MedicationRequest"} <= set(
        TRIAL._narrowed
    )


@pytest.mark.parametrize("patient_id", sorted(json.loads((SECOND_DIR / "expected.json").read_text(encoding="utf-8"))))
def test_prefilter_changes_nothing_on_every_nct06155604_fixture(patient_id: str) -> None:
    contents = read_bundle_file(SECOND_DIR / "patients" / f"{patient_id}.json")
    (p,) = contents.patients
    fast = SECOND.evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched)
    assert fast.to_json() == slow_report(SECOND, p.resources, p.patient_id, contents.searched, AS_OF)


@pytest.mark.parametrize("trial", [TRIAL, SECOND], ids=lambda t: t.id)
def test_prefilter_changes_nothing_on_the_synthea_corpus(trial: Trial) -> None:
    inputs = list(read_inputs([SYNTHEA / "lupus", SYNTHEA / "controls"]))
    assert all(isinstance(c, BundleContents) for c in inputs)
    patients = [(c, p) for c in inputs if isinstance(c, BundleContents) for p in c.patients]
    assert len(patients) >= 16
    for contents, p in patients:
        fast = trial.evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched)
        assert fast.to_json() == slow_report(trial, p.resources, p.patient_id, contents.searched, AS_OF), p.patient_id


def _atorvastatin(status: str = "active", authored: str = "2026-10-20", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "mr-atorvastatin",
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{b.PID}"},
        "authoredOn": authored,
        "medicationCodeableConcept": {
            "coding": [{"system": b.RX, "code": "259255", "display": "atorvastatin 80 MG Oral Tablet"}]
        },
        **extra,
    }


def _without_medications(record: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in record if not r["resourceType"].startswith("Medication")]


def test_a_dropped_unrelated_medication_still_shows_the_medication_list_is_current() -> None:
    """Regression guard: atorvastatin is in no criterion's drug list, so it is never validated; its
    recent activity must still count, or absence of every excluded drug could not be inferred."""
    record = [*_without_medications(b.base_record()), _atorvastatin()]
    keep = TRIAL.keep(b.AS_OF, record)
    assert not keep("MedicationRequest", record[-1])
    assert keep.medication_activity == [date.max, date(2026, 10, 20)]
    fast = evaluate(record, patient_id=b.PID, as_of=b.AS_OF)
    assert fast.to_json() == slow_report(TRIAL, record, b.PID, None, b.AS_OF)
    stale = evaluate(
        [*_without_medications(b.base_record()), _atorvastatin("completed", "2024-01-05")],
        patient_id=b.PID,
        as_of=b.AS_OF,
    )
    assert fast.to_json() != stale.to_json()  # the med list's currency decides some criteria


@pytest.mark.parametrize(
    "resource",
    [
        _atorvastatin(status=None),  # type: ignore[arg-type]
        _atorvastatin(authoredOn="yesterday"),
        _atorvastatin(medicationCodeableConcept={"coding": "259255"}),
        _atorvastatin(medicationCodeableConcept=None, medicationReference={"reference": "#med1"}),
        {**_atorvastatin(), "resourceType": "MedicationStatement", "effectivePeriod": ["2026-10-01"]},
    ],
    ids=["no-status", "bad-date", "coding-not-a-list", "contained-missing", "period-not-an-object"],
)
def test_an_unreadable_medication_is_validated_not_dropped(resource: dict[str, Any]) -> None:
    record = [*_without_medications(b.base_record()), resource]
    assert TRIAL.keep(b.AS_OF, record)(resource["resourceType"], resource)
    assert evaluate(record, patient_id=b.PID, as_of=b.AS_OF).to_json() == slow_report(
        TRIAL, record, b.PID, None, b.AS_OF
    )


def test_a_medication_named_only_by_its_referenced_medications_ingredient_is_kept() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "med-local",
        "code": {"coding": [{"system": "urn:local", "code": "X1"}], "text": "house formulary 7"},
        "ingredient": [
            {"itemCodeableConcept": {"coding": [{"system": b.RX, "code": "8640", "display": "prednisone"}]}}
        ],
    }
    request = _atorvastatin(medicationCodeableConcept=None, medicationReference={"reference": "Medication/med-local"})
    request.pop("medicationCodeableConcept")
    record = [*_without_medications(b.base_record()), medication, request]
    assert TRIAL.keep(b.AS_OF, record)("MedicationRequest", request)
    assert not TRIAL.keep(b.AS_OF, [r for r in record if r is not medication] + [{**medication, "ingredient": []}])(
        "MedicationRequest", request
    )


def test_unrelated_conditions_and_procedures_are_counted_but_not_validated() -> None:
    """ "N conditions searched" counts what was received, whether or not it was validated."""
    extra = [
        {
            "resourceType": "Condition",
            "id": f"c-extra-{i}",
            "subject": {"reference": f"Patient/{b.PID}"},
            "code": {"coding": [{"system": b.SCT, "code": "160903007", "display": "Full-time employment"}]},
        }
        for i in range(3)
    ]
    record = [*b.base_record(), *extra]
    keep = TRIAL.keep(b.AS_OF, record)
    assert not any(keep("Condition", c) for c in extra)
    assert keep("Condition", {**extra[0], "code": "not a concept"})  # unreadable: validation reports it
    fast = evaluate(record, patient_id=b.PID, as_of=b.AS_OF)
    assert fast.to_json() == slow_report(TRIAL, record, b.PID, None, b.AS_OF)


def _report(rid: str, status: str = "final", **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": status,
        "subject": {"reference": f"Patient/{b.PID}"},
        **fields,
    }


def test_a_report_is_kept_only_when_it_lists_a_kept_result() -> None:
    record = b.base_record()
    kept_obs = next(r for r in record if r["resourceType"] == "Observation")
    listing = _report(
        "dr-1", "entered-in-error", code={"text": "panel"}, result=[{"reference": f"Observation/{kept_obs['id']}"}]
    )
    other = {**listing, "id": "dr-2", "result": [{"reference": "Observation/not-in-the-record"}]}
    keep = TRIAL.keep(b.AS_OF, [*record, listing, other])
    assert keep("DiagnosticReport", listing)
    assert not keep("DiagnosticReport", other)
    assert keep("DiagnosticReport", {**other, "result": [{"reference": 7}]})
    whole = [*record, listing, other]
    assert evaluate(whole, patient_id=b.PID, as_of=b.AS_OF).to_json() == slow_report(TRIAL, whole, b.PID, None, b.AS_OF)


def test_a_report_naming_a_lupus_nephritis_class_only_in_its_conclusion_is_kept_for_the_second_trial() -> None:
    report = _report(
        "dr-renal",
        code={"text": "Pathology report"},
        effectiveDateTime="2019-05-02",
        conclusion="Lupus nephritis ISN/RPS class IV-G (A)",
    )
    lipids = {**report, "id": "dr-lipids", "code": {"text": "Lipid panel"}, "conclusion": "LDL above goal"}
    record = [*b.base_record(), report, lipids]
    keep = SECOND.keep(b.AS_OF, record)
    assert keep("DiagnosticReport", report)
    assert not keep("DiagnosticReport", lipids)
    assert keep("DiagnosticReport", {**lipids, "conclusion": {"text": "not a string"}})
    fast = SECOND.evaluate(record, patient_id=b.PID, as_of=b.AS_OF)
    assert fast.by_id("inc-ln-biopsy").status.value == "met"
    assert fast.to_json() == slow_report(SECOND, record, b.PID, None, b.AS_OF)


def test_an_invalid_condition_no_criterion_reads_does_not_block_the_not_applicable_fast_path() -> None:
    """Only the Conditions the criteria can read must be valid for the fast path, as for the full
    evaluation (which never validates the others); an invalid one it can read still blocks it."""
    employment = {
        "resourceType": "Condition",
        "id": "c-employment",
        "subject": {"reference": f"Patient/{b.PID}"},
        "code": {"coding": [{"system": b.SCT, "code": "160903007", "display": "Full-time employment"}]},
        "onsetDateTime": "not a date",
    }
    record = [b.patient(), b.condition("38341003"), employment]  # hypertension, no lupus code
    searched = ("Patient", "Condition")
    assert TRIAL.certainly_excluded_without_evaluation(record, patient_id=b.PID, searched=searched)
    full = evaluate(record, patient_id=b.PID, as_of=b.AS_OF, searched=searched)
    assert full.verdict.value == "excluded"
    assert not full.data_issues
    pregnancy = {**employment, "id": "c-pregnancy", "code": {"coding": [{"system": b.SCT, "code": "77386006"}]}}
    blocked = [*record, pregnancy]
    assert not TRIAL.certainly_excluded_without_evaluation(blocked, patient_id=b.PID, searched=searched)
    assert [i.reference for i in evaluate(blocked, patient_id=b.PID, as_of=b.AS_OF, searched=searched).data_issues] == [
        "Condition/c-pregnancy"
    ]


def _all_fixture_patients() -> list[tuple[Trial, Any, str, Any]]:
    """(trial, resources, patient id, searched) for every fixture of both trials and the Synthea corpus."""
    out: list[tuple[Trial, Any, str, Any]] = []
    for trial, folder in ((TRIAL, ROOT / "patients"), (SECOND, SECOND_DIR / "patients")):
        for path in sorted(folder.glob("*.json")):
            contents = read_bundle_file(path)
            out += [(trial, p.resources, p.patient_id, contents.searched) for p in contents.patients]
    for contents in read_inputs([SYNTHEA / "lupus", SYNTHEA / "controls"]):
        assert isinstance(contents, BundleContents)
        out += [(t, p.resources, p.patient_id, contents.searched) for t in (TRIAL, SECOND) for p in contents.patients]
    return out


def test_without_unread_observations_changes_no_report_and_drops_some() -> None:
    """What the hook service hands the engine after releasing the Observations no criterion reads
    (`Trial.without_unread_observations`) gives the same report as the whole record, on every
    fixture of both trials and the Synthea corpus."""
    cases = _all_fixture_patients()
    assert len(cases) >= 150 + 58 + 32
    dropped = 0
    for trial, resources, patient_id, searched in cases:
        kept = trial.without_unread_observations(resources, patient_id=patient_id, as_of=AS_OF)
        dropped += len(resources) - len(kept)
        assert all(r["resourceType"] == "Observation" for r in resources if r not in kept)
        whole = trial.evaluate(resources, patient_id=patient_id, as_of=AS_OF, searched=searched)
        assert trial.evaluate(kept, patient_id=patient_id, as_of=AS_OF, searched=searched) == whole, patient_id
    assert dropped > 1000  # the Synthea charts' vital signs, social history and old panels


def test_without_unread_observations_keeps_what_the_engine_reports() -> None:
    """Another patient's Observation and a non-object entry are not dropped: `evaluate` reports them."""
    unread = {"resourceType": "Observation", "id": "o-bp", "status": "final",
              "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
              "subject": {"reference": f"Patient/{b.PID}"}, "effectiveDateTime": "2026-10-01"}  # fmt: skip
    other = {**unread, "id": "o-other", "subject": {"reference": "Patient/someone-else"}}
    record: list[Any] = [*b.base_record(), unread, other, "not an object"]
    kept = TRIAL.without_unread_observations(record, patient_id=b.PID, as_of=b.AS_OF)
    assert unread not in kept
    assert other in kept
    assert "not an object" in kept
    report = evaluate(kept, patient_id=b.PID, as_of=b.AS_OF)
    assert report == evaluate(record, patient_id=b.PID, as_of=b.AS_OF)
    assert {i.kind for i in report.data_issues} >= {DataIssueKind.WRONG_PATIENT, DataIssueKind.NOT_JSON_OBJECT}
