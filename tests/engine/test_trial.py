"""A trial derives what it fetches and keeps from its rules' declared reads: a new rule with a longer
Observation window needs no edit anywhere else (look-back, raw pre-filter, prefetch and queries)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from cds.engine.definition import LOINC, Analyte, ValueSet
from cds.engine.model import Kind, Status
from cds.engine.rules import AnyOf, LabTest
from cds.engine.trial import Criterion, Trial
from cds.service.prefetch import queries_for
from cds.trials.nct04582136 import TRIAL
from tests.engine import builders as b

HBA1C = Analyte("HbA1c", ValueSet.of("LOINC 4548-4", [(LOINC, "4548-4")]), "%")


def hba1c_criterion(days: int) -> Criterion:
    return Criterion(
        "exc-hba1c",
        Kind.EXCLUSION,
        "HbA1c > 9 %",
        "poorly controlled diabetes",
        f"latest HbA1c in {days} days > 9 %",
        "Observation 4548-4",
        f"no HbA1c in {days} days",
        LabTest(HBA1C, ">", 9.0, window_days=days),
    )


def new_trial(days: int) -> Trial:
    """A trial built here: one lab rule with its own window, nothing else declared anywhere."""
    return Trial("TEST-1", "test trial", "https://example.org/test", (hba1c_criterion(days),), (HBA1C,))


@pytest.mark.parametrize("days", [90, 400])
def test_a_new_rule_with_a_longer_window_gets_its_data_fetched_and_kept(days: int) -> None:
    trial = new_trial(days)
    cutoff = b.AS_OF - timedelta(days=days)
    assert trial.observation_lookback_days == days
    assert trial.observation_cutoff(b.AS_OF) == cutoff

    inside = b.obs("4548-4", 10.2, "%", days_ago=days - 10)
    outside = b.obs("4548-4", 10.2, "%", days_ago=days + 1)
    keep = trial.keep(b.AS_OF)
    assert keep("Observation", inside)
    assert not keep("Observation", outside)

    (query,) = [q for q in queries_for(trial) if q.resource_type == "Observation"]
    params = query.search_params(b.PID, trial.observation_cutoff(b.AS_OF))
    assert f"{LOINC}|4548-4" in params["code"].split(",")
    assert params["date"] == f"ge{cutoff.isoformat()}"
    assert query.selects(inside, b.PID, trial.observation_cutoff(b.AS_OF))
    assert not query.selects(outside, b.PID, trial.observation_cutoff(b.AS_OF))

    report = trial.evaluate([b.patient(), inside, outside], patient_id=b.PID, as_of=b.AS_OF)
    result = report.by_id("exc-hba1c")
    assert result.status is Status.MET
    assert [e.reference for e in result.evidence] == [f"Observation/{inside['id']}"]


def test_a_rule_added_to_an_existing_trial_lengthens_its_lookback() -> None:
    """The 90-day rule joins NCT04582136 (30-day windows) inside an AnyOf: the look-back follows."""
    combined = AnyOf((hba1c_criterion(90).rule, LabTest(HBA1C, ">", 12.0, window_days=30)))
    criterion = dataclasses.replace(hba1c_criterion(90), rule=combined)
    trial = dataclasses.replace(TRIAL, criteria=(*TRIAL.criteria, criterion))
    assert TRIAL.observation_lookback_days == 30
    assert trial.observation_lookback_days == 90
    assert (LOINC, "4548-4") in trial.observation_codes
    sixty_days_old = b.obs("4548-4", 10.2, "%", days_ago=60)
    assert trial.keep(b.AS_OF)("Observation", sixty_days_old)
    assert not TRIAL.keep(b.AS_OF)("Observation", sixty_days_old)
    report = trial.evaluate([*b.base_record(), sixty_days_old], patient_id=b.PID, as_of=b.AS_OF)
    assert report.by_id("exc-hba1c").status is Status.MET


def test_each_result_depends_on_the_types_its_rule_declares() -> None:
    report = TRIAL.evaluate(b.base_record(), patient_id=b.PID, as_of=b.AS_OF)
    for criterion, result in zip(TRIAL.criteria, report.criteria, strict=True):
        declared = {r.resource_type for r in TRIAL.reads_of(criterion)}
        assert set(result.depends_on) <= declared
        assert list(result.depends_on) == sorted(result.depends_on)
    assert report.by_id("exc-leukopenia").depends_on == ("DiagnosticReport", "Observation")
    assert report.by_id("exc-investigator-judgment").depends_on == ()


def test_no_diagnosis_coded_rests_on_conditions_only() -> None:
    """`inc-sle-diagnosis` declares Observations too (SLICC items), but "no lupus code" rests on the
    Conditions alone: unreadable Observations leave that exclusion settled (as the fast path says)."""
    report = TRIAL.evaluate(
        [b.patient(), b.condition("38341003")],
        patient_id=b.PID,
        as_of=b.AS_OF,
        searched=("Patient", "Condition", "Observation"),
        incomplete=("Observation",),
    )
    result = report.by_id("inc-sle-diagnosis")
    assert result.status is Status.NOT_MET
    assert result.depends_on == ("Condition",)
    assert report.exclusion_settled
