"""Population results in the database: one transaction per run, never twice, nothing half-written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from cds.population.store import PopulationStore, RunInfo

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def info(run_id: str = "run-1") -> RunInfo:
    return RunInfo(
        id=run_id,
        trial="NCT04582136",
        fhir_server="http://fhir.test/fhir",
        export_level="system",
        since=None,
        as_of=date(2026, 11, 1),
        transaction_time="2026-11-01T00:00:00Z",
        started_at=NOW,
    )


def report(pid: str, verdict: str = "excluded") -> str:
    return json.dumps({"trial": "NCT04582136", "patient": f"Patient/{pid}", "verdict": verdict, "criteria": []})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PopulationStore]:
    s = PopulationStore(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    s.create_tables()
    yield s
    s.dispose()


def test_a_run_is_stored_once_with_all_its_results(store: PopulationStore) -> None:
    lines = [report(f"p{i}") for i in range(1200)]  # more than one insert batch
    assert store.save_run(info(), lines, completed_at=NOW) is True
    assert store.save_run(info(), lines, completed_at=NOW) is False  # resumed run: no duplicates
    (run,) = store.runs()
    assert run == {"id": "run-1", "status": "complete", "patients": 1200, "trial": "NCT04582136"}
    rows = store.results("run-1")
    assert len(rows) == 1200
    assert rows[0] == {"patient": "p0", "trial": "NCT04582136", "verdict": "excluded", "report": json.loads(lines[0])}


def test_a_run_interrupted_while_writing_leaves_nothing(store: PopulationStore) -> None:
    def lines() -> Iterator[str]:
        for i in range(700):
            yield report(f"p{i}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.save_run(info(), lines(), completed_at=NOW)
    assert store.runs() == []
    assert store.results("run-1") == []
    assert store.save_run(info(), [report("p1")], completed_at=NOW) is True
    assert store.runs()[0]["patients"] == 1
