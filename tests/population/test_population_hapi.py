"""`cds population` against the real HAPI sandbox: its Bulk Data export of the fixtures, screened on
Dask, agrees with `cds screen` on the same files (see `compare.py` for the one documented
difference), and the results are stored."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cds.bundles import read_bundle_file
from cds.cli import screen
from cds.config import Settings
from cds.population.run import PopulationOptions, export_plan, run_population, trial_for
from cds.population.store import PopulationStore
from sandbox import load_bundles

from .compare import compare_with_screen
from .fake_bulk import FIXTURES

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 1)
GROUP = "cds-population-fixtures"
FILES = sorted(FIXTURES.glob("*.json"))


@pytest.fixture(scope="module")
def fixture_group(hapi_with_fixtures: str) -> str:
    """A Group of exactly the fixture patients (other tests add patients to the shared server)."""
    ids = [p.patient_id for f in FILES for p in read_bundle_file(f).patients]
    group = {
        "resourceType": "Group",
        "id": GROUP,
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{i}"}} for i in ids],
    }
    r = httpx.put(f"{hapi_with_fixtures}/Group/{GROUP}", json=group, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code in (200, 201), r.text
    return GROUP


def screened() -> dict[str, dict[str, object]]:
    out, err = io.StringIO(), io.StringIO()
    assert screen(FILES, AS_OF, "jsonl", out, err) == 0
    return {r["patient"]: r for r in map(json.loads, out.getvalue().splitlines())}


def test_group_export_of_the_fixtures_screens_like_cds_screen(
    hapi_with_fixtures: str, fixture_group: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        population_dir=str(tmp_path / "runs"),
        bulk_poll_max_interval=1.0,
    )
    out, err = io.StringIO(), io.StringIO()
    opts = PopulationOptions(fhir_server=hapi_with_fixtures, group=fixture_group, as_of=AS_OF, fmt="jsonl", workers=2)
    code = run_population(opts, settings, out, err)
    assert code == 0, err.getvalue()
    population = {r["patient"]: r for r in map(json.loads, out.getvalue().splitlines())}
    expected = screened()
    assert len(population) == len(expected) == len(FILES) >= 102  # every fixture patient
    explained = compare_with_screen(population, expected, FILES, export_plan(trial_for("nct04582136"))[0])
    assert len(explained) < len(expected) // 10, explained

    store = PopulationStore(settings.database_url)
    (run,) = store.runs()
    assert run["status"] == "complete"
    assert run["patients"] == len(FILES)
    verdicts = {f"Patient/{r['patient']}": r["verdict"] for r in store.results(run["id"])}
    assert verdicts == {pid: r["verdict"] for pid, r in expected.items()}


def test_since_screens_only_changed_patients_with_their_whole_record(hapi_with_fixtures: str, tmp_path: Path) -> None:
    """A patient created after T (a copy of a fixture under a new id) is the only one screened with
    `--since T`, from a Patient-level export of its whole record, with the fixture's verdict."""
    source = FIXTURES / "base-candidate.json"
    new_id = f"pop-since-{uuid.uuid4().hex[:12]}"  # new on every run, also against a reused server
    text = source.read_text(encoding="utf-8").replace("base-candidate", new_id)
    since = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    copy = tmp_path / f"{new_id}.json"
    copy.write_text(text, encoding="utf-8")
    load_bundles(hapi_with_fixtures, [copy])

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        population_dir=str(tmp_path / "runs"),
        bulk_poll_max_interval=1.0,
    )
    out, err = io.StringIO(), io.StringIO()
    opts = PopulationOptions(fhir_server=hapi_with_fixtures, since=since, as_of=AS_OF, fmt="jsonl")
    assert run_population(opts, settings, out, err) == 0, err.getvalue()
    (report,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert report["patient"] == f"Patient/{new_id}"
    expected = screened()["Patient/base-candidate"]
    assert report["verdict"] == expected["verdict"]
    assert [c["status"] for c in report["criteria"]] == [c["status"] for c in expected["criteria"]]
