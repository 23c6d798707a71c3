"""Records present but not used are typed data issues (kind and resource type), and whether an
exclusion is settled is decided from those typed facts, never from their wording."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cds.engine.model import DataIssue, DataIssueKind, Report, Verdict
from cds.engine.record import build_record
from cds.trials.nct04582136 import TRIAL
from tests.engine import builders as b


def _invalid_observation() -> dict[str, Any]:
    bad = b.obs("6690-2", 2.0, "10*9/L", days_ago=3)
    bad["status"] = 42
    return bad


@pytest.mark.parametrize(
    ("raw", "kind", "resource_type"),
    [
        ("not an object", DataIssueKind.NOT_JSON_OBJECT, None),
        ({"resourceType": "Encounter", "id": "e1"}, DataIssueKind.UNSUPPORTED_TYPE, "Encounter"),
        ({"resourceType": "Patient", "id": "someone-else"}, DataIssueKind.WRONG_PATIENT, "Patient"),
        (
            {**b.obs("6690-2", 2.0, "10*9/L"), "subject": {"reference": "Patient/x"}},
            DataIssueKind.WRONG_PATIENT,
            "Observation",
        ),
        (_invalid_observation(), DataIssueKind.INVALID_FHIR, "Observation"),
        ({"resourceType": "Medication", "id": "m1", "status": 7}, DataIssueKind.INVALID_FHIR, "Medication"),
    ],
)
def test_every_unused_record_is_a_typed_issue(raw: Any, kind: DataIssueKind, resource_type: str | None) -> None:
    (issue,) = build_record([raw], patient_id=b.PID).issues
    assert issue.kind is kind
    assert issue.resource_type == resource_type
    assert issue.to_json()["kind"] == kind.value


def test_the_issue_kinds_are_exactly_those_the_record_emits() -> None:
    raws = [
        "x",
        {"resourceType": "Encounter", "id": "e1"},
        {"resourceType": "Patient", "id": "someone-else"},
        _invalid_observation(),
    ]
    assert {i.kind for i in build_record(raws, patient_id=b.PID).issues} == set(DataIssueKind)


def _too_old(*extra: Any, incomplete: tuple[str, ...] = ()) -> Report:
    """A patient excluded by age alone (86), with extra records."""
    record = [*b.base_record(), *extra]
    record[0] = b.patient(birth="1940-01-01")
    return TRIAL.evaluate(record, patient_id=b.PID, as_of=b.AS_OF, incomplete=incomplete)


def test_an_unusable_observation_does_not_unsettle_an_exclusion_by_age() -> None:
    report = _too_old(_invalid_observation())
    assert report.verdict is Verdict.EXCLUDED
    assert report.by_id("inc-age").depends_on == ("Patient",)
    assert report.doubtful_types == {"Observation"}
    assert report.exclusion_settled


def test_an_unreadable_patient_unsettles_an_exclusion_by_age() -> None:
    report = _too_old(incomplete=("Patient",))
    assert report.verdict is Verdict.EXCLUDED
    assert not report.exclusion_settled


def test_a_record_of_unknown_type_unsettles_every_exclusion() -> None:
    report = _too_old("not an object")
    assert report.doubtful_types is None
    assert not report.exclusion_settled


def test_rewording_data_issue_messages_never_changes_settlement() -> None:
    """Regression: "excluded but not settled" was read from a data-issue message prefix ("not valid
    FHIR") and a regex over evidence text; reworded messages now change nothing."""
    for report in (_too_old(_invalid_observation()), _too_old("not an object"), _too_old(incomplete=("Patient",))):
        issues = tuple(DataIssue("Resource/x", "reworded", i.kind, i.resource_type) for i in report.data_issues)
        criteria = tuple(
            dataclasses.replace(c, evidence=tuple(dataclasses.replace(e, description="?") for e in c.evidence))
            for c in report.criteria
        )
        reworded = dataclasses.replace(report, data_issues=issues, criteria=criteria)
        assert reworded.exclusion_settled is report.exclusion_settled
