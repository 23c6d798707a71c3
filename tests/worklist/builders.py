"""A database holding population runs of fixture patients (screened by the real engine) and a
clinician referral made the way the service makes it (card issued, then `accepted` feedback)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cds.bundles import read_bundle_file
from cds.engine import evaluate
from cds.population.store import PopulationStore, RunInfo
from cds.service.alerts import AlertPolicy, AlertStore
from cds.service.demo import FIXTURES_AS_OF
from cds.service.feedback import FeedbackItem
from cds.store.database import Database

PATIENTS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "patients"
FHIR = "http://fhir.test/fhir"
TRIAL = "NCT04582136"
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# likely (0 to verify), possible (1, 2 and 8 to verify), two not candidates
PATIENTS = (
    "base-candidate",
    "var-hcg-missing",
    "var-pred-no-dose",
    "real-synthea-quiet",
    "var-age-17",
    "real-non-lupus",
)
REFERRED = "real-non-lupus"  # not a candidate in the run, referred from the point-of-care card


def report_lines(names: tuple[str, ...] = PATIENTS) -> list[str]:
    lines = []
    for name in names:
        contents = read_bundle_file(PATIENTS_DIR / f"{name}.json")
        for patient in contents.patients:
            report = evaluate(
                patient.resources,
                patient_id=patient.patient_id,
                as_of=FIXTURES_AS_OF,
                searched=contents.searched,
                incomplete=tuple(sorted(contents.incomplete)),
            )
            lines.append(json.dumps(report.to_json()))
    return lines


def run_info(run_id: str, completed_offset_days: int = 0) -> RunInfo:
    return RunInfo(
        id=run_id,
        trial=TRIAL,
        fhir_server=FHIR,
        export_level="system",
        since=None,
        as_of=FIXTURES_AS_OF,
        transaction_time=None,
        started_at=NOW - timedelta(days=3 - completed_offset_days, hours=1),
    )


def seed(url: str, *, referral: bool = True) -> None:
    """Two runs (the older one must be ignored) and, optionally, a clinician referral."""
    store = PopulationStore(url)
    store.create_tables()
    store.save_run(run_info("run-old"), report_lines(("var-male",)), completed_at=NOW - timedelta(days=10))
    store.save_run(run_info("run-new"), report_lines(), completed_at=NOW - timedelta(days=1))
    store.dispose()
    if referral:
        refer(url, REFERRED)


def refer(url: str, patient_id: str, card: str = "card-1") -> None:
    database = Database(url)
    alerts = AlertStore(database.engine, AlertPolicy())
    alerts.record_issued([card], alerts.patient_key(FHIR, patient_id), TRIAL, NOW - timedelta(hours=5))
    applied = alerts.apply_feedback(
        [FeedbackItem(card=card, outcome="accepted", outcome_timestamp="2026-11-02T04:00:00Z")],
        NOW - timedelta(hours=4),
    )
    assert applied == 1
    database.dispose()


def db_url(tmp: Path) -> str:
    return f"sqlite:///{tmp}/worklist.sqlite3"
