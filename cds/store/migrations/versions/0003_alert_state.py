"""Alert fatigue and the report page: cards issued, snooze/referral state per patient and trial,
short-lived report pages, the server-side key for patient keys (`cds.service.alerts`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_alert_state",
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("snooze_reason", sa.String(100), nullable=True),
        sa.Column("referred_on", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("patient_key", "trial_id"),
    )
    op.create_table(
        "cds_card_issue",
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("card_uuid"),
    )
    op.create_index("ix_cds_card_issue_expires_at", "cds_card_issue", ["expires_at"])
    op.create_index("ix_cds_card_issue_patient_key", "cds_card_issue", ["patient_key"])
    op.create_table(
        "cds_report_page",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_cds_report_page_expires_at", "cds_report_page", ["expires_at"])
    op.create_table(
        "cds_state_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("cds_state_key")
    op.drop_index("ix_cds_report_page_expires_at", table_name="cds_report_page")
    op.drop_table("cds_report_page")
    op.drop_index("ix_cds_card_issue_patient_key", table_name="cds_card_issue")
    op.drop_index("ix_cds_card_issue_expires_at", table_name="cds_card_issue")
    op.drop_table("cds_card_issue")
    op.drop_table("cds_alert_state")
