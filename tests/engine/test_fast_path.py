"""The engine's raw pre-filters change nothing but speed.

`Trial.evaluate` validates only the Observations a criterion can read (by code, and by date: none
older than `Trial.observation_lookback_days` before the as-of date) and indexes them per context.
The slow path validates every resource and scans every Observation for every analyte. Both must
give the same report - every criterion's status, reason and evidence, the data issues - on every
fixture patient and on records grown with history.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds.bundles import read_bundle_file
from cds.engine import evaluate
from cds.engine.facts import obs_date
from cds.engine.record import build_record
from cds.engine.trial import Trial, set_strict
from cds.trials.nct04582136 import TRIAL
from tests.engine import builders as b

ROOT = Path(__file__).resolve().parents[2] / "fixtures"
AS_OF = date(2026, 11, 1)
EXPECTED = json.loads((ROOT / "expected.json").read_text(encoding="utf-8"))


def slow_report(trial: Trial, resources: Any, patient_id: str, searched: Any, as_of: date = AS_OF) -> dict[str, Any]:
    """Every resource validated, no pre-filter, no index: the reference the fast path must equal."""
    record = build_record(resources, patient_id=patient_id, searched=searched, keep=None)
    out: dict[str, Any] = trial.evaluate_record(record, as_of).to_json()
    return out


@pytest.fixture(autouse=True)
def strict() -> Any:
    set_strict(True)
    yield
    set_strict(False)


@pytest.mark.parametrize("patient_id", sorted(EXPECTED))
def test_fast_path_report_is_identical_on_every_fixture(patient_id: str) -> None:
    contents = read_bundle_file(ROOT / "patients" / f"{patient_id}.json")
    (p,) = contents.patients
    fast = evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched)
    assert len(fast.criteria) == len(TRIAL.criteria) == 27
    assert fast.to_json() == slow_report(TRIAL, p.resources, p.patient_id, contents.searched)


@pytest.mark.parametrize("patient_id", ["real-active-sle", "base-candidate", "var-wbc-old", "var-hcg-old"])
def test_history_grown_record_gives_the_same_report(patient_id: str) -> None:
    """Older copies of every Observation (1-5 years back) are filtered out by date: same report."""
    contents = read_bundle_file(ROOT / "patients" / f"{patient_id}.json")
    (p,) = contents.patients
    grown = [dict(r) for r in p.resources]
    for r in p.resources:
        if r.get("resourceType") != "Observation" or not isinstance(r.get("effectiveDateTime"), str):
            continue
        for years in range(1, 6):
            c = copy.deepcopy(dict(r))
            c["id"] = f"{r['id']}-y{years}"
            day = date.fromisoformat(c["effectiveDateTime"][:10]) - timedelta(days=365 * years)
            c["effectiveDateTime"] = day.isoformat() + c["effectiveDateTime"][10:]
            c.pop("issued", None)
            grown.append(c)
    fast = evaluate(grown, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched).to_json()
    assert fast == slow_report(TRIAL, grown, p.patient_id, contents.searched)
    original = evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched).to_json()
    assert fast == original


def with_rule(trial: Trial, criterion_id: str, rule: Any) -> Trial:
    """The trial with one criterion's rule replaced (everything derived is derived again)."""
    criteria = tuple(dataclasses.replace(c, rule=rule) if c.id == criterion_id else c for c in trial.criteria)
    return dataclasses.replace(trial, criteria=criteria)


def test_a_longer_rule_window_reads_older_observations() -> None:
    """The date filter follows the rules' windows: a 60-day serology window keeps a 45-day-old dsDNA."""
    record = [r for r in b.base_record() if r.get("code", {}).get("coding", [{}])[0].get("code") != "33799-8"]
    record.append(b.obs("33799-8", 45, "[IU]/mL", days_ago=45))
    default = evaluate(record, patient_id=b.PID, as_of=b.AS_OF)
    assert "anti-dsDNA 45" not in default.by_id("inc-serology").reason
    serology = next(c.rule for c in TRIAL.criteria if c.id == "inc-serology")
    longer = with_rule(TRIAL, "inc-serology", dataclasses.replace(serology, window_days=60))
    assert longer.observation_lookback_days == 60
    report = longer.evaluate(record, patient_id=b.PID, as_of=b.AS_OF)
    assert "anti-dsDNA 45" in report.by_id("inc-serology").reason
    assert report.to_json() == slow_report(longer, record, b.PID, None, b.AS_OF)


def test_invalid_resources_the_criteria_could_read_are_still_reported() -> None:
    bad = b.obs("6690-2", 5.2, "10*3/uL", days_ago=3)
    bad["valueQuantity"]["value"] = "five"
    record = [*b.base_record(), bad]
    report = evaluate(record, patient_id=b.PID, as_of=b.AS_OF)
    assert [i.reference for i in report.data_issues] == [f"Observation/{bad['id']}"]
    assert report.to_json() == slow_report(TRIAL, record, b.PID, None, b.AS_OF)


def _raw(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": f"Patient/{b.PID}"},
        "code": {"coding": [{"system": b.LOINC, "code": "6690-2"}]},
        **fields,
    }


CUTOFF = AS_OF - timedelta(days=TRIAL.observation_lookback_days)  # 2026-10-02


@pytest.mark.parametrize(
    "fields",
    [
        {"effectiveDateTime": "2026-10-02"},
        {"effectiveDateTime": "2026-10-01"},
        {"effectiveDateTime": "2026-10-01T23:59:00-11:00"},
        {"effectiveDateTime": "2026-10-02T00:10:00+14:00"},
        {"effectiveDateTime": "2026-10"},
        {"effectiveDateTime": "2026-09"},
        {"effectiveDateTime": "2026"},
        {"effectiveDateTime": "2025"},
        {"effectiveInstant": "2026-10-01T12:00:00Z"},
        {"effectiveInstant": "2026-10-03T12:00:00Z"},
        {"effectivePeriod": {"start": "2026-09-01", "end": "2026-10-05"}},
        {"effectivePeriod": {"start": "2026-09-01", "end": "2026-09-30"}},
        {"effectivePeriod": {"start": "2026-10-05"}},
        {"effectivePeriod": {"start": "2026-09-05"}},
        {"issued": "2026-10-20T10:00:00Z"},
        {"issued": "2026-08-20T10:00:00Z"},
        {"effectiveDateTime": "2026-08-01", "issued": "2026-10-20T10:00:00Z"},
    ],
)
def test_date_filter_drops_only_what_the_engine_would_never_read(fields: dict[str, Any]) -> None:
    from fhir.resources.R4B.observation import Observation

    raw = _raw(**fields)
    when = obs_date(Observation.model_validate(raw))
    assert when is not None
    assert TRIAL.observation_in_reach(raw, AS_OF) == (when >= CUTOFF)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"effectiveDateTime": "2026-13-45"},
        {"effectiveDateTime": "2026-1-5"},
        {"effectiveDateTime": "2026-09-0xT10:00:00Z"},
        {"effectiveDateTime": 20260901},
        {"effectivePeriod": "2026-09-01"},
        {"effectivePeriod": {}},
        {"effectiveTiming": {"event": ["2020-01-01"]}},
    ],
)
def test_date_filter_keeps_what_it_cannot_read(fields: dict[str, Any]) -> None:
    """Undated or unreadable dates are kept, so validation reports them (or the engine ignores them)."""
    assert TRIAL.observation_in_reach(_raw(**fields), AS_OF)


def test_lookback_covers_every_observation_window() -> None:
    from cds.trials import nct04582136 as trial

    windows = (trial.SAFETY_LAB_DAYS, trial.SEROLOGY_DAYS, trial.SLEDAI_DAYS, trial.PREGNANCY_TEST_DAYS)
    assert TRIAL.observation_lookback_days == max(windows)


@pytest.mark.parametrize("patient_id", sorted(EXPECTED))
def test_observation_index_finds_what_a_full_scan_finds(patient_id: str) -> None:
    from cds.engine import facts
    from cds.engine.rules import Context

    contents = read_bundle_file(ROOT / "patients" / f"{patient_id}.json")
    (p,) = contents.patients
    record = build_record(p.resources, patient_id=p.patient_id, searched=contents.searched)
    ctx = Context(record=record, as_of=AS_OF, policy=TRIAL.policy)
    for analyte in TRIAL.analytes:
        for days in (7, 30, 3650):
            assert ctx.labs(analyte, days) == facts.lab_values(record, analyte, AS_OF, days)
