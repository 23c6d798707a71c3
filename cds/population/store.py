"""Population runs in the database: `population_run` and `population_result` (patient × trial × run).

A run's rows are written in ONE transaction at the end of the run, together with the run row marked
`complete`: an interrupted run leaves nothing in the database, and writing the same run again is a
no-op (the run id is the primary key), so a resumed run never duplicates results.

The tables are on the service database's `Base` (`cds.store`), created by its Alembic migrations
(revision 0004); the database is the service's (`CDS_DATABASE_URL`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, DateTime, ForeignKey, Integer, String, UniqueConstraint, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from cds.store.base import Base
from cds.store.database import Database

RUN_COMPLETE = "complete"
BATCH = 500


class PopulationRun(Base):
    __tablename__ = "population_run"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    trial: Mapped[str] = mapped_column(String(64))
    fhir_server: Mapped[str] = mapped_column(String(2000))
    export_level: Mapped[str] = mapped_column(String(200))  # "system" or "Group/<id>"
    since: Mapped[str | None] = mapped_column(String(64), nullable=True)
    as_of: Mapped[date] = mapped_column(Date)
    transaction_time: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(32))
    patients: Mapped[int] = mapped_column(Integer)
    export_errors: Mapped[int] = mapped_column(Integer, default=0)


class PopulationResult(Base):
    __tablename__ = "population_result"
    __table_args__ = (UniqueConstraint("run_id", "patient_id", "trial", name="uq_population_result"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("population_run.id"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    trial: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(32))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    trial: str
    fhir_server: str
    export_level: str
    since: str | None
    as_of: date
    transaction_time: str | None
    started_at: datetime
    export_errors: int = 0


class PopulationStore:
    def __init__(self, url: str) -> None:
        self.database = Database(url)
        self.engine = self.database.engine

    def create_tables(self) -> None:
        """Bring the database to the current schema (the service's migrations, idempotent)."""
        self.database.upgrade()

    def has_run(self, run_id: str) -> bool:
        with Session(self.engine) as session:
            return session.get(PopulationRun, run_id) is not None

    def save_run(self, run: RunInfo, report_lines: Iterable[str], completed_at: datetime) -> bool:
        """Write the run and all its results in one transaction. False if the run was already stored."""
        with Session(self.engine) as session, session.begin():
            if session.get(PopulationRun, run.id) is not None:
                return False
            row = PopulationRun(
                id=run.id,
                trial=run.trial,
                fhir_server=run.fhir_server,
                export_level=run.export_level,
                since=run.since,
                as_of=run.as_of,
                transaction_time=run.transaction_time,
                started_at=run.started_at,
                completed_at=completed_at,
                status=RUN_COMPLETE,
                patients=0,
                export_errors=run.export_errors,
            )
            session.add(row)
            session.flush()
            count = 0
            batch: list[dict[str, Any]] = []
            for line in report_lines:
                report = json.loads(line)
                batch.append(
                    {
                        "run_id": run.id,
                        "patient_id": str(report["patient"]).removeprefix("Patient/"),
                        "trial": run.trial,
                        "verdict": report["verdict"],
                        "report": report,
                    }
                )
                if len(batch) >= BATCH:
                    session.execute(insert(PopulationResult), batch)
                    count += len(batch)
                    batch = []
            if batch:
                session.execute(insert(PopulationResult), batch)
                count += len(batch)
            row.patients = count
        return True

    def results(self, run_id: str) -> list[dict[str, Any]]:
        query = select(PopulationResult).where(PopulationResult.run_id == run_id).order_by(PopulationResult.id)
        with Session(self.engine) as session:
            return [
                {"patient": r.patient_id, "trial": r.trial, "verdict": r.verdict, "report": r.report}
                for r in session.scalars(query)
            ]

    def runs(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [
                {"id": r.id, "status": r.status, "patients": r.patients, "trial": r.trial}
                for r in session.scalars(select(PopulationRun).order_by(PopulationRun.started_at))
            ]

    def dispose(self) -> None:
        self.engine.dispose()
