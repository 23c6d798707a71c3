"""The worklist's tables and queries: a status per patient x trial, an append-only audit trail, the
key signing worklist sessions; candidates read from the latest complete population run per trial.

* ``worklist_status``: the current status of one patient of one FHIR server for one trial (absent:
  ``new``). Keyed by (FHIR server, patient id, trial): a patient id is unique only within its
  server, so ``Patient/123`` of two servers has two statuses and two audit trails. The server is the
  FHIR base URL as the population run records it (no trailing ``/``; the alerts' patient key is an
  HMAC of the same ``fhirServer|patientId``).
* ``worklist_audit``: one row per change (who, when, what: old and new status; which server,
  trial and patient). The migration adds
  triggers that refuse UPDATE and DELETE on it (SQLite and PostgreSQL), so the trail is append-only
  even for code that tries.
* ``worklist_key``: a random key created once (shared by workers and replicas) that signs session
  cookies when ``CDS_WORKLIST_SESSION_SECRET`` is not set.

"Referred by clinician": the point-of-care card's referral (``accepted`` feedback) is stored by
`cds.service.alerts` under a patient key (an HMAC of ``fhirServer|patientId``) with no patient id.
A population result is marked referred when the key of (its run's FHIR server, its patient id) has
a referral date. Referrals of patients absent from the latest runs cannot be shown by id (none is
stored); the page gives their number.
Synchronous: call from a thread pool.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cds.population.store import RUN_COMPLETE, PopulationResult, PopulationRun
from cds.service.alerts import AlertStateRow, AlertStore
from cds.store.base import Base
from cds.store.database import Database
from cds.worklist.reports import TrialInfo, trial_info
from cds.worklist.rows import EXCLUDED, NEW, STATUSES, Attrition, Candidate, attrition, fails, to_verify_of

AUDIT_STATUS = "status"


UNKNOWN_SERVER = ""  # rows from before revision 0006 whose server could not be told (see the migration)


class WorklistStatusRow(Base):
    __tablename__ = "worklist_status"

    fhir_server: Mapped[str] = mapped_column(String(2000), primary_key=True)
    trial: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(100))


class WorklistAuditRow(Base):
    __tablename__ = "worklist_audit"
    __table_args__ = (Index("ix_worklist_audit_patient", "fhir_server", "trial", "patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    user: Mapped[str] = mapped_column(String(100))
    fhir_server: Mapped[str] = mapped_column(String(2000), server_default="")
    trial: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    old_value: Mapped[str | None] = mapped_column(String(32), nullable=True)
    new_value: Mapped[str | None] = mapped_column(String(32), nullable=True)


class WorklistKeyRow(Base):
    __tablename__ = "worklist_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128))


class StatusConflict(Exception):
    """The status changed since the page was shown (another coordinator): nothing was written."""


class UnknownStatus(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RunSummary:
    id: str
    trial: str
    fhir_server: str
    completed_at: datetime
    patients: int
    as_of: date


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    user: str
    trial: str
    patient_id: str
    action: str
    old_value: str | None
    new_value: str | None
    fhir_server: str = UNKNOWN_SERVER


@dataclass(frozen=True, slots=True)
class Worklist:
    runs: tuple[RunSummary, ...]
    candidates: tuple[Candidate, ...]
    referrals_elsewhere: int  # clinician referrals of patients not in the latest runs


class WorklistStore:
    def __init__(self, database: Database, alerts: AlertStore) -> None:
        self.engine = database.engine
        self.alerts = alerts
        self._attrition: dict[str, Attrition] = {}  # a complete run never changes

    # ------------------------------------------------------------------ runs and candidates

    def latest_runs(self) -> list[RunSummary]:
        """The latest complete population run of each trial on each FHIR server, by trial and server."""
        latest = (
            select(
                PopulationRun.trial,
                PopulationRun.fhir_server,
                func.max(PopulationRun.completed_at).label("done"),
            )
            .where(PopulationRun.status == RUN_COMPLETE)
            .group_by(PopulationRun.trial, PopulationRun.fhir_server)
            .subquery()
        )
        query = (
            select(PopulationRun)
            .join(
                latest,
                (PopulationRun.trial == latest.c.trial)
                & (PopulationRun.fhir_server == latest.c.fhir_server)
                & (PopulationRun.completed_at == latest.c.done),
            )
            .where(PopulationRun.status == RUN_COMPLETE)
            .order_by(PopulationRun.trial, PopulationRun.fhir_server, PopulationRun.id)
        )
        with Session(self.engine) as session:
            runs: dict[tuple[str, str], RunSummary] = {}
            for r in session.scalars(query):
                runs.setdefault(
                    (r.trial, r.fhir_server),
                    RunSummary(r.id, r.trial, r.fhir_server, r.completed_at, r.patients, r.as_of),
                )
            return list(runs.values())

    def _referrals(self, session: Session, now: datetime) -> dict[tuple[str, str], date]:
        """(patient key, trial) -> referral date, for referrals still within the quiet period."""
        rows = session.execute(
            select(AlertStateRow.patient_key, AlertStateRow.trial_id, AlertStateRow.referred_on).where(
                AlertStateRow.referred_on.is_not(None)
            )
        )
        out: dict[tuple[str, str], date] = {}
        for key, trial, _ in rows:
            referred = self.alerts.status(key, trial, now).referred_on
            if referred is not None:
                out[(key, trial)] = referred
        return out

    def worklist(self, now: datetime) -> Worklist:
        runs = self.latest_runs()
        candidates: list[Candidate] = []
        with Session(self.engine) as session:
            referrals = self._referrals(session, now)
            statuses = {
                (s.fhir_server, s.trial, s.patient_id): s.status for s in session.scalars(select(WorklistStatusRow))
            }
            matched: set[tuple[str, str]] = set()
            for run in runs:
                trial = trial_info(run.trial)
                light = session.execute(
                    select(PopulationResult.id, PopulationResult.patient_id, PopulationResult.verdict).where(
                        PopulationResult.run_id == run.id
                    )
                ).all()
                wanted: dict[int, date | None] = {}
                for result_id, patient_id, verdict in light:
                    key = (self.alerts.patient_key(run.fhir_server, patient_id), run.trial)
                    referred = referrals.get(key)
                    if referred is not None:
                        matched.add(key)
                    if verdict != EXCLUDED or referred is not None:
                        wanted[result_id] = referred
                candidates.extend(self._candidates(session, run, trial, wanted, statuses))
        elsewhere = sum(1 for key in referrals if key not in matched)
        return Worklist(runs=tuple(runs), candidates=tuple(candidates), referrals_elsewhere=elsewhere)

    def _candidates(
        self,
        session: Session,
        run: RunSummary,
        trial: TrialInfo,
        wanted: dict[int, date | None],
        statuses: dict[tuple[str, str, str], str],
    ) -> Iterator[Candidate]:
        ids = list(wanted)
        for start in range(0, len(ids), 500):
            query = select(PopulationResult).where(PopulationResult.id.in_(ids[start : start + 500]))
            for r in session.scalars(query):
                report = r.report if isinstance(r.report, dict) else {}
                criteria = report.get("criteria") or []
                yield Candidate(
                    result_id=r.id,
                    run_id=run.id,
                    fhir_server=run.fhir_server,
                    trial=run.trial,
                    patient_id=r.patient_id,
                    verdict=r.verdict,
                    to_verify=to_verify_of(report, trial),
                    against=sum(1 for c in criteria if isinstance(c, dict) and fails(c)),
                    referred_on=wanted[r.id],
                    status=statuses.get((run.fhir_server, run.trial, r.patient_id), NEW),
                )

    def result(self, result_id: int) -> tuple[str, dict[str, Any]] | None:
        """(trial id, stored report) of one result of a latest complete run, or None."""
        latest = {r.id for r in self.latest_runs()}
        with Session(self.engine) as session:
            row = session.get(PopulationResult, result_id)
            if row is None or row.run_id not in latest:
                return None
            return row.trial, dict(row.report)

    def attrition(self, run: RunSummary) -> Attrition:
        cached = self._attrition.get(run.id)
        if cached is not None:
            return cached
        with Session(self.engine) as session:
            reports = session.scalars(
                select(PopulationResult.report)
                .where(PopulationResult.run_id == run.id)
                .execution_options(yield_per=500)
            )
            result = attrition(run.id, trial_info(run.trial), reports)
        if len(self._attrition) > 32:
            self._attrition.clear()
        self._attrition[run.id] = result
        return result

    # ------------------------------------------------------------------ status and audit

    def status(self, fhir_server: str, trial: str, patient_id: str) -> str:
        with Session(self.engine) as session:
            row = session.get(WorklistStatusRow, (fhir_server, trial, patient_id))
            return row.status if row is not None else NEW

    def set_status(
        self, *, fhir_server: str, trial: str, patient_id: str, status: str, expected: str, user: str, now: datetime
    ) -> bool:
        """Change the status (and append the audit row) in one transaction. False if unchanged;
        StatusConflict if the current status is not `expected` (changed by someone else meanwhile)."""
        if status not in STATUSES:
            raise UnknownStatus(status)
        with Session(self.engine) as session, session.begin():
            row = session.get(WorklistStatusRow, (fhir_server, trial, patient_id), with_for_update=True)
            current = row.status if row is not None else NEW
            if current != expected:
                raise StatusConflict(current)
            if current == status:
                return False
            if row is None:
                session.add(
                    WorklistStatusRow(
                        fhir_server=fhir_server,
                        trial=trial,
                        patient_id=patient_id,
                        status=status,
                        updated_at=now,
                        updated_by=user,
                    )
                )
            else:
                row.status, row.updated_at, row.updated_by = status, now, user
            session.add(
                WorklistAuditRow(
                    at=now,
                    user=user,
                    fhir_server=fhir_server,
                    trial=trial,
                    patient_id=patient_id,
                    action=AUDIT_STATUS,
                    old_value=current,
                    new_value=status,
                )
            )
        return True

    def audit(
        self, *, fhir_server: str | None = None, trial: str = "", patient_id: str = "", limit: int = 200
    ) -> list[AuditEntry]:
        """The newest audit entries first (optionally for one server, trial, patient)."""
        query = select(WorklistAuditRow)
        if fhir_server is not None:
            query = query.where(WorklistAuditRow.fhir_server == fhir_server)
        if trial:
            query = query.where(WorklistAuditRow.trial == trial)
        if patient_id:
            query = query.where(WorklistAuditRow.patient_id == patient_id)
        query = query.order_by(WorklistAuditRow.id.desc()).limit(limit)
        with Session(self.engine) as session:
            return [
                AuditEntry(a.id, a.at, a.user, a.trial, a.patient_id, a.action, a.old_value, a.new_value, a.fhir_server)
                for a in session.scalars(query)
            ]

    # ------------------------------------------------------------------ session key

    def session_key(self) -> bytes:
        """The stored random signing key (created by the first caller; replicas read the same)."""
        try:
            with Session(self.engine) as session, session.begin():
                if session.get(WorklistKeyRow, 1) is None:
                    session.add(WorklistKeyRow(id=1, key=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another process inserted it first
        with Session(self.engine) as session:
            row = session.get(WorklistKeyRow, 1)
            assert row is not None
            return row.key.encode()
