"""multi-task leaderboard: feasibility under control guards, fine-tuned reference scores

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
    # Rows written before guards existed had none: feasible. Batch mode lets SQLite alter by copying.
    with op.batch_alter_table("leaderboard") as batch:
        batch.add_column(sa.Column("feasible", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("reference_scores", sa.JSON(), nullable=True))
    op.create_index("ix_leaderboard_feasible", "leaderboard", ["feasible"])


def downgrade() -> None:
    op.drop_index("ix_leaderboard_feasible", table_name="leaderboard")
    with op.batch_alter_table("leaderboard") as batch:
        batch.drop_column("reference_scores")
        batch.drop_column("feasible")
