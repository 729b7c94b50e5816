"""baselines: the obvious alternatives scored beside each study's result

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


def upgrade() -> None:
    op.create_table(
        "baselines",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study", sa.String(256), nullable=False),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("objective", sa.String(64), nullable=False),
        sa.Column("coefficients", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("objective_search", sa.Float(), nullable=False),
        sa.Column("objective_heldout", sa.Float(), nullable=False),
        sa.Column("gain_ci", sa.JSON(), nullable=False),
        sa.Column("versus_single_ci", sa.JSON(), nullable=True),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("heldout_predictions", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("study", "name", name="uq_baselines_study_name"),
    )
    op.create_index("ix_baselines_study", "baselines", ["study"])
    op.create_index("ix_baselines_task", "baselines", ["task"])


def downgrade() -> None:
    op.drop_index("ix_baselines_task", table_name="baselines")
    op.drop_index("ix_baselines_study", table_name="baselines")
    op.drop_table("baselines")
