"""leaderboard: per-example held-out predictions and the gain's paired bootstrap interval

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
    # Nullable: rows written before 0004 have no stored predictions and no interval. Batch mode lets
    # SQLite alter by copying the table (PostgreSQL adds the columns in place).
    with op.batch_alter_table("leaderboard") as batch:
        batch.add_column(sa.Column("heldout_predictions", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("gain_ci", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leaderboard") as batch:
        batch.drop_column("gain_ci")
        batch.drop_column("heldout_predictions")
