"""The worklist's queries on a database holding real engine reports: latest run per trial, candidates
and clinician referrals, status changes with their append-only audit trail (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DatabaseError

from cds.population.store import PopulationStore
from cds.service.alerts import AlertPolicy, AlertStore
from cds.store.database import MIGRATIONS, Database
from cds.worklist.rows import ranked
from cds.worklist.store import UNKNOWN_SERVER, StatusConflict, UnknownStatus, WorklistStore
from tests.worklist.builders import FHIR, NOW, REFERRED, TRIAL, db_url, refer, report_lines, run_info, seed


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
    assert store.status(FHIR, TRIAL, "base-candidate") == "new"
    changed = store.set_status(
        fhir_server=FHIR,
        trial=TRIAL,
        patient_id="base-candidate",
        status="contacted",
        expected="new",
        user="alice",
        now=NOW,
    )
    assert changed
    assert store.status(FHIR, TRIAL, "base-candidate") == "contacted"
    (entry,) = store.audit()
    assert (entry.user, entry.fhir_server, entry.trial, entry.patient_id) == ("alice", FHIR, TRIAL, "base-candidate")
    assert (entry.action, entry.old_value, entry.new_value) == ("status", "new", "contacted")
    assert entry.at.replace(tzinfo=NOW.tzinfo) == NOW
    rows = {c.patient_id: c for c in store.worklist(NOW).candidates}
    assert rows["base-candidate"].status == "contacted"
    assert rows["base-candidate"].research_subject_status == "candidate"


def test_a_stale_status_change_is_refused_and_not_audited(store: WorklistStore) -> None:
    store.set_status(
        fhir_server=FHIR,
        trial=TRIAL,
        patient_id="var-hcg-missing",
        status="contacted",
        expected="new",
        user="a",
        now=NOW,
    )
    with pytest.raises(StatusConflict):
        store.set_status(
            fhir_server=FHIR,
            trial=TRIAL,
            patient_id="var-hcg-missing",
            status="declined",
            expected="new",
            user="b",
            now=NOW,
        )
    assert store.status(FHIR, TRIAL, "var-hcg-missing") == "contacted"
    assert len(store.audit()) == 1


def test_an_unchanged_status_writes_no_audit_row(store: WorklistStore) -> None:
    assert not store.set_status(
        fhir_server=FHIR, trial=TRIAL, patient_id="x", status="new", expected="new", user="a", now=NOW
    )
    assert store.audit() == []


def test_an_unknown_status_is_refused(store: WorklistStore) -> None:
    with pytest.raises(UnknownStatus):
        store.set_status(
            fhir_server=FHIR, trial=TRIAL, patient_id="x", status="eligible", expected="new", user="a", now=NOW
        )


def _audit_is_append_only(store: WorklistStore) -> None:
    store.set_status(
        fhir_server=FHIR,
        trial=TRIAL,
        patient_id="base-candidate",
        status="contacted",
        expected="new",
        user="a",
        now=NOW,
    )
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


OTHER = "https://other-fhir.test/r4"


def _two_servers(url: str) -> WorklistStore:
    """The runs of `seed` (server FHIR) and a run of the same patients on a second server."""
    seed(url)
    other = PopulationStore(url)
    info = dataclasses.replace(run_info("run-other"), fhir_server=OTHER)
    other.save_run(info, report_lines(("base-candidate",)), completed_at=NOW - timedelta(hours=2))
    other.dispose()
    database = Database(url)
    return WorklistStore(database, AlertStore(database.engine, AlertPolicy()))


def test_same_patient_id_on_two_fhir_servers_has_independent_statuses(tmp_path: Path) -> None:
    """Regression: worklist statuses were keyed by (trial, patient id) only, so `Patient/123` of two
    FHIR servers shared one status and one audit trail."""
    store = _two_servers(db_url(tmp_path))
    worklist = store.worklist(NOW)
    assert {(r.id, r.fhir_server) for r in worklist.runs} == {("run-new", FHIR), ("run-other", OTHER)}
    same = [c for c in worklist.candidates if c.patient_id == "base-candidate"]
    assert sorted(c.fhir_server for c in same) == sorted([FHIR, OTHER])

    store.set_status(
        fhir_server=OTHER,
        trial=TRIAL,
        patient_id="base-candidate",
        status="enrolled",
        expected="new",
        user="bo",
        now=NOW,
    )
    assert store.status(OTHER, TRIAL, "base-candidate") == "enrolled"
    assert store.status(FHIR, TRIAL, "base-candidate") == "new"
    rows = {c.fhir_server: c.status for c in store.worklist(NOW).candidates if c.patient_id == "base-candidate"}
    assert rows == {FHIR: "new", OTHER: "enrolled"}
    # the first server's status starts from its own "new", not from the other server's "enrolled"
    store.set_status(
        fhir_server=FHIR,
        trial=TRIAL,
        patient_id="base-candidate",
        status="declined",
        expected="new",
        user="al",
        now=NOW,
    )
    assert [e.user for e in store.audit(fhir_server=FHIR, trial=TRIAL, patient_id="base-candidate")] == ["al"]
    assert [e.user for e in store.audit(fhir_server=OTHER, trial=TRIAL, patient_id="base-candidate")] == ["bo"]


def test_the_referral_join_stays_per_server(tmp_path: Path) -> None:
    store = _two_servers(db_url(tmp_path))
    refer(db_url(tmp_path), "base-candidate", card="card-9")  # referred on FHIR, not on OTHER
    referred = {
        c.fhir_server: c.referred_on for c in store.worklist(NOW).candidates if c.patient_id == "base-candidate"
    }
    assert referred[FHIR] is not None
    assert referred[OTHER] is None


def _at_revision(url: str, revision: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_migration_0006_gives_old_rows_their_server_only_when_one_server_screened_them(tmp_path: Path) -> None:
    url = db_url(tmp_path)
    _at_revision(url, "0005")
    population = PopulationStore(url)  # its tables are the same at 0005 (no create_tables: no upgrade)
    population.save_run(run_info("run-new"), report_lines(("base-candidate", "var-hcg-missing")), completed_at=NOW)
    info = dataclasses.replace(run_info("run-other"), fhir_server=OTHER)
    population.save_run(info, report_lines(("base-candidate",)), completed_at=NOW)
    population.dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        for patient in ("base-candidate", "var-hcg-missing", "gone"):  # two servers, one, none
            connection.execute(
                text(
                    "INSERT INTO worklist_status (trial, patient_id, status, updated_at, updated_by) "
                    "VALUES (:t, :p, 'contacted', :at, 'old')"
                ),
                {"t": TRIAL, "p": patient, "at": NOW},
            )
            connection.execute(
                text(
                    'INSERT INTO worklist_audit (at, "user", trial, patient_id, action, old_value, new_value) '
                    "VALUES (:at, 'old', :t, :p, 'status', 'new', 'contacted')"
                ),
                {"t": TRIAL, "p": patient, "at": NOW},
            )
    engine.dispose()
    _at_revision(url, "head")
    database = Database(url)
    store = WorklistStore(database, AlertStore(database.engine, AlertPolicy()))
    assert store.status(FHIR, TRIAL, "var-hcg-missing") == "contacted"  # one server screened it: kept
    assert store.status(FHIR, TRIAL, "base-candidate") == "new"  # two servers: not guessed
    assert store.status(OTHER, TRIAL, "base-candidate") == "new"
    assert store.status(UNKNOWN_SERVER, TRIAL, "base-candidate") == "contacted"
    assert store.status(UNKNOWN_SERVER, TRIAL, "gone") == "contacted"
    servers = {e.patient_id: e.fhir_server for e in store.audit()}
    assert servers == {"var-hcg-missing": FHIR, "base-candidate": UNKNOWN_SERVER, "gone": UNKNOWN_SERVER}
    _audit_is_append_only_after_migration(store)
    database.dispose()


def _audit_is_append_only_after_migration(store: WorklistStore) -> None:
    for statement in ("UPDATE worklist_audit SET new_value = 'enrolled'", "DELETE FROM worklist_audit"):
        with pytest.raises(DatabaseError), store.engine.begin() as connection:
            connection.execute(text(statement))
