"""Population runs (`cds population`): one row per run, one result per patient x trial x run
(`cds.population.store`).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "population_run",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("trial", sa.String(64), nullable=False),
        sa.Column("fhir_server", sa.String(2000), nullable=False),
        sa.Column("export_level", sa.String(200), nullable=False),
        sa.Column("since", sa.String(64), nullable=True),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("transaction_time", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("export_errors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "population_result",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("trial", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["population_run.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "patient_id", "trial", name="uq_population_result"),
    )
    op.create_index("ix_population_result_run_id", "population_result", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_population_result_run_id", table_name="population_result")
    op.drop_table("population_result")
    op.drop_table("population_run")
