"""The engine agrees with what every committed fixture patient was designed to show."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from cds.bundles import read_bundle_file
from cds.engine import evaluate
from cds.engine.trial import set_strict

ROOT = Path(__file__).resolve().parents[2] / "fixtures"
AS_OF = date(2026, 11, 1)
EXPECTED = json.loads((ROOT / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("patient_id", sorted(EXPECTED))
def test_fixture_patient(patient_id: str) -> None:
    set_strict(True)
    try:
        contents = read_bundle_file(ROOT / "patients" / f"{patient_id}.json")
        (p,) = contents.patients
        report = evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched)
    finally:
        set_strict(False)
    expected = EXPECTED[patient_id]
    got = {cid: report.by_id(cid).status.value for cid in expected["criteria"]}
    assert got == expected["criteria"], expected.get("about")
    assert report.verdict.value == expected["verdict"]
    assert not report.data_issues, "fixtures are valid FHIR about their own patient"


def test_fixtures_cover_every_verdict() -> None:
    assert {e["verdict"] for e in EXPECTED.values()} == {"excluded", "likely-candidate", "possible-candidate"}


@pytest.mark.parametrize("patient_id", sorted(EXPECTED))
def test_not_applicable_fast_path_agrees_with_full_evaluation(patient_id: str) -> None:
    from cds.trials.nct04582136 import TRIAL

    contents = read_bundle_file(ROOT / "patients" / f"{patient_id}.json")
    (p,) = contents.patients
    fast = TRIAL.not_applicable(p.resources)
    report = evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched)
    diagnosis = report.by_id("inc-sle-diagnosis").status.value
    # fast "not applicable" exactly when the full evaluation finds no lupus code of any kind
    assert fast == (diagnosis == "not_met" and "cutaneous" not in report.by_id("inc-sle-diagnosis").reason)
    if fast:
        assert report.verdict.value == "excluded"
