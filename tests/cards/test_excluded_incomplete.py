"""An exclusion that may rest on data that was not read is never silent."""

from __future__ import annotations

from datetime import date

import pytest
from report_builders import AGE, C3, SLEDAI, TRIAL, criterion

from cards.models import SUMMARY_MAX
from cards.render import exclusion_settled, render_cards
from cds.engine.model import DataIssue, Evidence, Kind, Report, Status, Verdict

OLD = criterion(
    "inc-age",
    Status.NOT_MET,
    title="Age 18-65",
    reason="age 86 is above 65",
    evidence=(Evidence("Patient/p1", "age on the as-of date", value="86", unit="a"),),
)
LEUKOPENIA = criterion(
    "exc-leukopenia",
    Status.MET,
    Kind.EXCLUSION,
    title="WBC < 3",
    reason="WBC 2.0",
    evidence=(Evidence("Observation/wbc", "WBC", value="2.0", unit="10*9/L"),),
)
NO_SLE = criterion(
    "inc-sle-diagnosis",
    Status.NOT_MET,
    title="SLE diagnosis",
    reason="no lupus code",
    evidence=(Evidence("searched Condition: no matching record", "no SLE code"),),
)
NO_EVIDENCE = criterion("exc-x", Status.MET, Kind.EXCLUSION, title="X", reason="present")


def rep(*criteria: object, incomplete: tuple[str, ...] = (), issues: tuple[DataIssue, ...] = ()) -> Report:
    return Report(
        trial="NCT04582136",
        patient="Patient/p1",
        as_of=date(2026, 11, 1),
        criteria=tuple(criteria),  # type: ignore[arg-type]
        data_issues=issues,
        incomplete=incomplete,
    )


INVALID_OBS = DataIssue("Observation/bad", "not valid FHIR R4 Observation (fields: status)")
INVALID_COND = DataIssue("Condition/bad", "not valid FHIR R4 Condition (fields: code)")
OTHER_PATIENT = DataIssue("Observation/x", "not about this patient")
NOT_READ = DataIssue("Encounter/e", "resource type not read by this service")


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
        (rep(LEUKOPENIA, AGE, issues=(DataIssue("Resource/(not an object)", "not a JSON object"),)), False),
        (rep(NO_EVIDENCE, AGE, incomplete=("Procedure",)), False),
        (rep(NO_EVIDENCE, AGE), True),
    ],
)
def test_exclusion_settled(report: Report, settled: bool) -> None:
    assert report.verdict is Verdict.EXCLUDED
    assert exclusion_settled(report) is settled
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
    assert exclusion_settled(report) is True or report.verdict is not Verdict.EXCLUDED
    card = render_cards(report, TRIAL)[0]
    assert "data incomplete" in card.summary
    assert "not settled" not in (card.detail or "")
