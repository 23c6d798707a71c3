"""The worklist's queries on a database holding real engine reports: latest run per trial, candidates
and clinician referrals, status changes with their append-only audit trail (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from cds.service.alerts import AlertPolicy, AlertStore
from cds.store.database import Database
from cds.worklist.rows import ranked
from cds.worklist.store import StatusConflict, UnknownStatus, WorklistStore
from tests.worklist.builders import FHIR, NOW, REFERRED, TRIAL, db_url, refer, seed


def _store(url: str) -> Iterator[WorklistStore]:
    seed(url)
    database = Database(url)
    yield WorklistStore(database, AlertStore(database.engine, AlertPolicy()))
    database.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WorklistStore]:
    yield from _store(db_url(tmp_path))


def test_candidates_come_from_the_latest_complete_run_ranked(store: WorklistStore) -> None:
    worklist = store.worklist(NOW)
    assert [r.id for r in worklist.runs] == ["run-new"]
    rows = ranked(worklist.candidates)
    assert [(c.patient_id, c.verdict, len(c.to_verify)) for c in rows] == [
        ("base-candidate", "likely-candidate", 0),
        ("var-hcg-missing", "possible-candidate", 1),
        ("var-pred-no-dose", "possible-candidate", 2),
        ("real-synthea-quiet", "possible-candidate", 8),
        (REFERRED, "excluded", 8),
    ]
    assert "var-male" not in {c.patient_id for c in rows}  # only in the older run
    assert "var-age-17" not in {c.patient_id for c in rows}  # not a candidate, not referred


def test_a_referral_from_the_card_marks_the_patient_referred_by_clinician(store: WorklistStore) -> None:
    rows = {c.patient_id: c for c in store.worklist(NOW).candidates}
    assert rows[REFERRED].referred_on is not None
    assert rows[REFERRED].referred_on.isoformat() == "2026-11-02"
    assert rows["base-candidate"].referred_on is None


def test_a_referral_of_a_patient_outside_the_runs_is_counted_not_shown(tmp_path: Path) -> None:
    url = db_url(tmp_path)
    stores = _store(url)
    store = next(stores)
    refer(url, "somebody-else", card="card-2")
    worklist = store.worklist(NOW)
    assert worklist.referrals_elsewhere == 1
    assert "somebody-else" not in {c.patient_id for c in worklist.candidates}


def test_a_referral_past_its_quiet_period_is_no_longer_shown(store: WorklistStore) -> None:
    later = NOW + timedelta(days=AlertPolicy().referral_quiet_days + 2)
    assert all(c.referred_on is None for c in store.worklist(later).candidates)


def test_a_status_change_is_audited_who_what_when(store: WorklistStore) -> None:
    assert store.status(TRIAL, "base-candidate") == "new"
    changed = store.set_status(
        trial=TRIAL, patient_id="base-candidate", status="contacted", expected="new", user="alice", now=NOW
    )
    assert changed
    assert store.status(TRIAL, "base-candidate") == "contacted"
    (entry,) = store.audit()
    assert (entry.user, entry.trial, entry.patient_id) == ("alice", TRIAL, "base-candidate")
    assert (entry.action, entry.old_value, entry.new_value) == ("status", "new", "contacted")
    assert entry.at.replace(tzinfo=NOW.tzinfo) == NOW
    rows = {c.patient_id: c for c in store.worklist(NOW).candidates}
    assert rows["base-candidate"].status == "contacted"
    assert rows["base-candidate"].research_subject_status == "candidate"


def test_a_stale_status_change_is_refused_and_not_audited(store: WorklistStore) -> None:
    store.set_status(trial=TRIAL, patient_id="var-hcg-missing", status="contacted", expected="new", user="a", now=NOW)
    with pytest.raises(StatusConflict):
        store.set_status(
            trial=TRIAL, patient_id="var-hcg-missing", status="declined", expected="new", user="b", now=NOW
        )
    assert store.status(TRIAL, "var-hcg-missing") == "contacted"
    assert len(store.audit()) == 1


def test_an_unchanged_status_writes_no_audit_row(store: WorklistStore) -> None:
    assert not store.set_status(trial=TRIAL, patient_id="x", status="new", expected="new", user="a", now=NOW)
    assert store.audit() == []


def test_an_unknown_status_is_refused(store: WorklistStore) -> None:
    with pytest.raises(UnknownStatus):
        store.set_status(trial=TRIAL, patient_id="x", status="eligible", expected="new", user="a", now=NOW)


def _audit_is_append_only(store: WorklistStore) -> None:
    store.set_status(trial=TRIAL, patient_id="base-candidate", status="contacted", expected="new", user="a", now=NOW)
    for statement in ("UPDATE worklist_audit SET new_value = 'enrolled'", "DELETE FROM worklist_audit"):
        with pytest.raises(DatabaseError), store.engine.begin() as connection:
            connection.execute(text(statement))
    assert [e.new_value for e in store.audit()] == ["contacted"]


def test_the_audit_trail_is_append_only_on_sqlite(store: WorklistStore) -> None:
    _audit_is_append_only(store)


def test_the_audit_trail_is_append_only_on_postgresql(postgres_url: str) -> None:
    stores = _store(postgres_url)
    store = next(stores)
    _audit_is_append_only(store)
    assert [r.id for r in store.worklist(NOW).runs] == ["run-new"]
    assert {c.patient_id for c in store.worklist(NOW).candidates if c.referred_on} == {REFERRED}
    stores.close()


def test_a_report_is_served_only_from_a_latest_run(store: WorklistStore) -> None:
    rows = {c.patient_id: c for c in store.worklist(NOW).candidates}
    found = store.result(rows["var-hcg-missing"].result_id)
    assert found is not None
    assert found[0] == TRIAL
    assert found[1]["patient"] == "Patient/var-hcg-missing"
    assert store.result(10_000) is None


def test_the_session_key_is_created_once(store: WorklistStore) -> None:
    assert store.session_key() == store.session_key()
    assert len(store.session_key()) == 64


def test_attrition_covers_every_patient_of_the_run(store: WorklistStore) -> None:
    (run,) = store.worklist(NOW).runs
    a = store.attrition(run)
    assert a.patients == 6
    assert a.rows[-1].remaining == 4  # the four candidates
    assert FHIR not in repr(a)
