"""JWT ids seen (replay protection shared by every worker and replica).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_jwt_replay",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_cds_jwt_replay_expires_at", "cds_jwt_replay", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_cds_jwt_replay_expires_at", table_name="cds_jwt_replay")
    op.drop_table("cds_jwt_replay")
