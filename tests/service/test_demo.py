from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.service.alerts import GATE_QUERIES
from cds.service.demo import (
    DEFAULT_PATIENT,
    EXAMPLES_DIR,
    build_request,
    example_pair,
    load_bundle,
    main,
    run_demo,
    write_examples,
)
from cds.service.prefetch import queries_for
from cds.trials.nct04582136 import TRIAL

FIXTURE_PATIENTS = Path(__file__).resolve().parents[2] / "fixtures" / "patients"


def test_run_demo_posts_over_real_http_and_prints_the_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo() == 0
    out = capsys.readouterr().out
    assert "POST http://127.0.0.1:" in out
    assert "hook: patient-view" in out
    assert "observations: Bundle with" in out
    assert "HTTP 200" in out
    assert "[info] Possible candidate" in out
    assert "SLE coded since 2022-03-15" in out  # the detail rendered for a terminal...
    assert "**" not in out  # ...not raw markdown
    assert "\\[" not in out
    assert "link: Full prescreen report (criteria and evidence): http://127.0.0.1:" in out


def test_run_demo_with_an_excluded_patient(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(FIXTURE_PATIENTS / "var-age-66.json") == 0
    out = capsys.readouterr().out
    assert "No card: not a candidate: Age 18-65" in out  # says why: the deciding criterion
    assert "age 66 is outside 18-65" in out


def test_run_demo_with_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert run_demo(bad) == 2
    assert main([str(tmp_path / "missing.json")]) == 2


def test_request_prefetch_has_the_patient_and_one_searchset_per_template() -> None:
    request = build_request(load_bundle(DEFAULT_PATIENT))
    prefetch = request["prefetch"]
    assert prefetch["patient"]["resourceType"] == "Patient"
    assert prefetch["patient"]["id"] == request["context"]["patientId"]
    searchsets = {k: v for k, v in prefetch.items() if k != "patient"}
    gate = {q.key for q in GATE_QUERIES}  # Consent, ResearchSubject, referral ServiceRequest
    assert set(searchsets) == {q.key for q in queries_for(TRIAL) if not q.read} | gate
    assert "observationsByCategory" in searchsets  # the SLEDAI-2K total recognised by text
    assert all(v["resourceType"] == "Bundle" and v["type"] == "searchset" for v in searchsets.values())
    assert len(prefetch["observations"]["entry"]) > 0


def test_examples_on_disk_match_a_fresh_deterministic_build(tmp_path: Path) -> None:
    request, response = example_pair()
    assert (request, response) == example_pair()
    written = write_examples(tmp_path)
    for path in written:
        committed = EXAMPLES_DIR / path.name
        assert committed.exists(), f"{committed} missing: run python -m cds.service.demo --write-examples"
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed.name} is stale: run python -m cds.service.demo --write-examples"
        )
    assert json.loads((EXAMPLES_DIR / "patient-view-response.json").read_text())["cards"]
