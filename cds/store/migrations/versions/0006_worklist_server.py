"""Worklist statuses and their audit rows keyed by FHIR server: (fhir_server, trial, patient_id).

A patient id is unique only within one FHIR server: before this revision, ``Patient/123`` of two
servers shared one status and one audit trail. The server is the FHIR base URL as the population
run records it (`population_run.fhir_server`, no trailing ``/``).

Existing rows: their server is taken from the population runs of the same trial that screened that
patient id. When exactly one server did, the row gets it. When none did (the runs were removed) or
several did (the bug this revision fixes: the status cannot be told apart), the row keeps an EMPTY
server (`cds.worklist.store.UNKNOWN_SERVER`): nothing is guessed. Such a status no longer attaches to
any worklist row (the patient shows as ``new`` again), and its audit rows stay in the trail, shown
with the server "unknown". The audit trail stays append-only: its triggers are dropped only while
the new column is filled, inside this migration's transaction, and created again.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UNKNOWN_SERVER = ""

_PG_TRIGGER = (
    "CREATE TRIGGER worklist_audit_append_only BEFORE UPDATE OR DELETE ON worklist_audit "
    "FOR EACH ROW EXECUTE FUNCTION worklist_audit_append_only()"
)


def _drop_audit_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS worklist_audit_append_only ON worklist_audit")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS worklist_audit_no_{event}")


def _create_audit_triggers(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute(_PG_TRIGGER)  # the function of revision 0005 is kept
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER worklist_audit_no_{event.lower()} BEFORE {event} ON worklist_audit "
                "BEGIN SELECT RAISE(ABORT, 'worklist_audit is append-only'); END"
            )


def _servers(bind: sa.engine.Connection) -> dict[tuple[str, str], str]:
    """(trial, patient id) -> the one FHIR server whose runs screened it (absent: none or several)."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    rows = bind.execute(
        sa.text(
            "SELECT DISTINCT r.trial, p.patient_id, r.fhir_server FROM population_result p "
            "JOIN population_run r ON r.id = p.run_id"
        )
    )
    for trial, patient, server in rows:
        found[(trial, patient)].add(server)
    return {key: next(iter(servers)) for key, servers in found.items() if len(servers) == 1}


def _status_table(with_server: bool) -> list[sa.Column[Any]]:
    server: list[sa.Column[Any]] = [sa.Column("fhir_server", sa.String(2000), nullable=False)]
    return [
        *(server if with_server else []),
        sa.Column("trial", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
    ]


def _status_clause() -> sa.TableClause:
    """The status columns both revisions have, typed (SQLite gives its timestamps back as datetimes)."""
    return sa.table(
        "worklist_status",
        sa.column("trial", sa.String()),
        sa.column("patient_id", sa.String()),
        sa.column("status", sa.String()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
        sa.column("updated_by", sa.String()),
    )


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    servers = _servers(bind)

    # worklist_status: a new primary key (SQLite cannot alter one): copy, drop, create, insert
    old = [dict(row._mapping) for row in bind.execute(sa.select(_status_clause()))]
    op.drop_table("worklist_status")
    table = op.create_table(
        "worklist_status",
        *_status_table(with_server=True),
        sa.PrimaryKeyConstraint("fhir_server", "trial", "patient_id"),
    )
    if old:
        op.bulk_insert(
            table,
            [{**row, "fhir_server": servers.get((row["trial"], row["patient_id"]), UNKNOWN_SERVER)} for row in old],
        )

    # worklist_audit: the server column, filled the same way (triggers off only meanwhile)
    _drop_audit_triggers(dialect)
    op.add_column(
        "worklist_audit", sa.Column("fhir_server", sa.String(2000), server_default=UNKNOWN_SERVER, nullable=False)
    )
    for (trial, patient), server in servers.items():
        bind.execute(
            sa.text("UPDATE worklist_audit SET fhir_server = :server WHERE trial = :trial AND patient_id = :patient"),
            {"server": server, "trial": trial, "patient": patient},
        )
    op.drop_index("ix_worklist_audit_patient", table_name="worklist_audit")
    op.create_index("ix_worklist_audit_patient", "worklist_audit", ["fhir_server", "trial", "patient_id"])
    _create_audit_triggers(dialect)


def downgrade() -> None:
    """Back to one status per (trial, patient id): of a patient id's statuses on several servers,
    the latest change is kept (the audit rows all stay)."""
    bind = op.get_bind()
    dialect = bind.dialect.name
    status = _status_clause()
    rows = bind.execute(sa.select(status).order_by(status.c.updated_at))
    latest = {(r.trial, r.patient_id): dict(r._mapping) for r in rows}
    op.drop_table("worklist_status")
    table = op.create_table(
        "worklist_status", *_status_table(with_server=False), sa.PrimaryKeyConstraint("trial", "patient_id")
    )
    if latest:
        op.bulk_insert(table, list(latest.values()))
    _drop_audit_triggers(dialect)
    op.drop_index("ix_worklist_audit_patient", table_name="worklist_audit")
    with op.batch_alter_table("worklist_audit") as batch:
        batch.drop_column("fhir_server")
    op.create_index("ix_worklist_audit_patient", "worklist_audit", ["trial", "patient_id"])
    _create_audit_triggers(dialect)
