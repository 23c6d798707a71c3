"""The coordinators' worklist (`cds.worklist.store`): a status per patient x trial, an append-only
audit trail (UPDATE and DELETE refused by triggers) and the key that signs worklist sessions.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION worklist_audit_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'worklist_audit is append-only';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "worklist_status",
        sa.Column("trial", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("trial", "patient_id"),
    )
    op.create_table(
        "worklist_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Column("trial", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("old_value", sa.String(32), nullable=True),
        sa.Column("new_value", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_worklist_audit_patient", "worklist_audit", ["trial", "patient_id"])
    op.create_table(
        "worklist_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER worklist_audit_append_only BEFORE UPDATE OR DELETE ON worklist_audit "
            "FOR EACH ROW EXECUTE FUNCTION worklist_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER worklist_audit_no_{event.lower()} BEFORE {event} ON worklist_audit "
                "BEGIN SELECT RAISE(ABORT, 'worklist_audit is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS worklist_audit_append_only ON worklist_audit")
        op.execute("DROP FUNCTION IF EXISTS worklist_audit_append_only()")
    op.drop_table("worklist_key")
    op.drop_index("ix_worklist_audit_patient", table_name="worklist_audit")
    op.drop_table("worklist_audit")
    op.drop_table("worklist_status")
