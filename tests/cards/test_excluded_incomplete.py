"""An exclusion that may rest on data that was not read is never silent."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from report_builders import AGE, C3, SLEDAI, TRIAL, criterion

from cards.models import SUMMARY_MAX
from cards.render import render_cards
from cds.engine.model import DataIssue, DataIssueKind, Evidence, Kind, Report, Status, Verdict

OLD = criterion(
    "inc-age",
    Status.NOT_MET,
    title="Age 18-65",
    reason="age 86 is above 65",
    evidence=(Evidence("Patient/p1", "age on the as-of date", value="86", unit="a"),),
    depends_on=("Patient",),
)
LEUKOPENIA = criterion(
    "exc-leukopenia",
    Status.MET,
    Kind.EXCLUSION,
    title="WBC < 3",
    reason="WBC 2.0",
    evidence=(Evidence("Observation/wbc", "WBC", value="2.0", unit="10*9/L"),),
    depends_on=("DiagnosticReport", "Observation"),
)
NO_SLE = criterion(
    "inc-sle-diagnosis",
    Status.NOT_MET,
    title="SLE diagnosis",
    reason="no lupus code",
    evidence=(Evidence("searched Condition: no matching record", "no SLE code"),),
    depends_on=("Condition",),
)
NO_EVIDENCE = criterion("exc-x", Status.MET, Kind.EXCLUSION, title="X", reason="present")  # dependencies unknown


def rep(*criteria: object, incomplete: tuple[str, ...] = (), issues: tuple[DataIssue, ...] = ()) -> Report:
    return Report(
        trial="NCT04582136",
        patient="Patient/p1",
        as_of=date(2026, 11, 1),
        criteria=tuple(criteria),  # type: ignore[arg-type]
        data_issues=issues,
        incomplete=incomplete,
    )


INVALID = DataIssueKind.INVALID_FHIR
INVALID_OBS = DataIssue("Observation/bad", "not valid FHIR R4 Observation (fields: status)", INVALID, "Observation")
INVALID_COND = DataIssue("Condition/bad", "not valid FHIR R4 Condition (fields: code)", INVALID, "Condition")
INVALID_MED = DataIssue("Medication/bad", "not valid FHIR R4 Medication", INVALID, "Medication")
OTHER_PATIENT = DataIssue("Observation/x", "not about this patient", DataIssueKind.WRONG_PATIENT, "Observation")
NOT_READ = DataIssue(
    "Encounter/e", "resource type not read by this service", DataIssueKind.UNSUPPORTED_TYPE, "Encounter"
)
NOT_OBJECT = DataIssue("Resource/(not an object)", "not a JSON object", DataIssueKind.NOT_JSON_OBJECT)
STEROIDS = criterion(
    "exc-high-dose-steroid",
    Status.MET,
    Kind.EXCLUSION,
    title="Prednisone > 100 mg/day",
    reason="prednisone 120 mg/day",
    evidence=(Evidence("MedicationRequest/m1", "prednisone 120 mg/day"),),
    depends_on=("MedicationAdministration", "MedicationDispense", "MedicationRequest", "MedicationStatement"),
)


@pytest.mark.parametrize(
    ("report", "settled"),
    [
        (rep(OLD, C3), True),  # nothing doubtful
        (rep(LEUKOPENIA, AGE, incomplete=("MedicationStatement",)), True),
        (rep(LEUKOPENIA, AGE, incomplete=("Observation",)), False),
        (rep(LEUKOPENIA, OLD, incomplete=("Observation",)), True),  # age alone excludes
        (rep(NO_SLE, AGE, incomplete=("Condition",)), False),
        (rep(NO_SLE, AGE, issues=(INVALID_COND,)), False),
        (rep(NO_SLE, AGE, issues=(INVALID_OBS,)), True),
        (rep(LEUKOPENIA, AGE, issues=(OTHER_PATIENT, NOT_READ)), True),
        (rep(LEUKOPENIA, AGE, issues=(NOT_OBJECT,)), False),
        (rep(STEROIDS, AGE, issues=(INVALID_OBS,)), True),
        (rep(STEROIDS, AGE, issues=(INVALID_MED,)), False),  # a Medication is read through the orders
        (rep(NO_EVIDENCE, AGE, incomplete=("Procedure",)), False),
        (rep(NO_EVIDENCE, AGE), True),
    ],
)
def test_exclusion_settled(report: Report, settled: bool) -> None:
    assert report.verdict is Verdict.EXCLUDED
    assert report.exclusion_settled is settled
    cards = render_cards(report, TRIAL)
    if settled:
        assert cards == []
        return
    assert len(cards) == 1
    card = cards[0]
    assert card.summary.startswith("Not a candidate on the data read — data incomplete")
    assert len(card.summary) <= SUMMARY_MAX
    assert card.suggestions is None, "no referral suggestion for a patient the data excludes"
    assert "not settled" in (card.detail or "")


def test_candidates_are_unaffected() -> None:
    report = rep(AGE, C3, SLEDAI, incomplete=("Observation",))
    assert report.verdict is not Verdict.EXCLUDED
    card = render_cards(report, TRIAL)[0]
    assert "data incomplete" in card.summary
    assert "not settled" not in (card.detail or "")


def _reworded(report: Report) -> Report:
    """The same report with every data-issue message and every evidence reference and description
    reworded (nothing a decision may rest on)."""
    criteria = tuple(
        replace(c, evidence=tuple(replace(e, reference="elsewhere", description="reworded") for e in c.evidence))
        for c in report.criteria
    )
    issues = tuple(replace(i, problem="reworded", reference="Resource/x") for i in report.data_issues)
    return replace(report, criteria=criteria, data_issues=issues)


@pytest.mark.parametrize(
    "report",
    [
        rep(NO_SLE, AGE, issues=(INVALID_COND,)),
        rep(NO_SLE, AGE, issues=(INVALID_OBS,)),
        rep(LEUKOPENIA, AGE, incomplete=("Observation",)),
        rep(LEUKOPENIA, OLD, incomplete=("Observation",)),
        rep(LEUKOPENIA, AGE, issues=(OTHER_PATIENT, NOT_READ)),
        rep(LEUKOPENIA, AGE, issues=(NOT_OBJECT,)),
        rep(STEROIDS, AGE, issues=(INVALID_MED,)),
    ],
)
def test_rewording_a_message_never_changes_whether_the_data_incomplete_card_shows(report: Report) -> None:
    """Regression: the card used to decide "excluded but not settled" from a regex over evidence
    text and a data-issue message prefix, so rewording a message made a safety card disappear."""
    reworded = _reworded(report)
    assert reworded.exclusion_settled is report.exclusion_settled
    assert [c.summary for c in render_cards(reworded, TRIAL)] == [c.summary for c in render_cards(report, TRIAL)]
