"""search tables: screenings and leaderboard

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
        "screenings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("target_repo", sa.String(512), nullable=False),
        sa.Column("target_revision", sa.String(128), nullable=False),
        sa.Column("candidate_repo", sa.String(512), nullable=False),
        sa.Column("candidate_revision", sa.String(128), nullable=False),
        sa.Column("base_repo", sa.String(512), nullable=False),
        sa.Column("base_revision", sa.String(128), nullable=False),
        sa.Column("lambdas", sa.JSON(), nullable=False),
        sa.Column("best_lambda", sa.Float(), nullable=False),
        sa.Column("best_score", sa.Float(), nullable=False),
        sa.Column("target_score", sa.Float(), nullable=False),
        sa.Column("gain", sa.Float(), nullable=False),
        sa.Column("split_fingerprint", sa.String(128), nullable=False),
        sa.Column("scorer", sa.JSON(), nullable=False),
        sa.Column("worker", sa.String(256), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "task",
            "target_revision",
            "candidate_revision",
            "split_fingerprint",
            name="uq_screenings_task_target_candidate_split",
        ),
    )
    op.create_index("ix_screenings_task", "screenings", ["task"])
    op.create_index("ix_screenings_target_revision", "screenings", ["target_revision"])
    op.create_index("ix_screenings_gain", "screenings", ["gain"])

    op.create_table(
        "leaderboard",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("study", sa.String(256), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("score_search", sa.Float(), nullable=False),
        sa.Column("score_heldout", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("target_score_search", sa.Float(), nullable=False),
        sa.Column("target_score_heldout", sa.Float(), nullable=True),
        sa.Column("target_repo", sa.String(512), nullable=False),
        sa.Column("target_revision", sa.String(128), nullable=False),
        sa.Column("base_repo", sa.String(512), nullable=False),
        sa.Column("base_revision", sa.String(128), nullable=False),
        sa.Column("ingredients", sa.JSON(), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("method_options", sa.JSON(), nullable=False),
        sa.Column("scorer", sa.JSON(), nullable=False),
        sa.Column("split_fingerprints", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("objective", sa.String(64), nullable=False),
        sa.Column("constraints", sa.JSON(), nullable=False),
        sa.Column("pareto", sa.Boolean(), nullable=False),
        sa.Column("examples_scored", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(256), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heldout_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("study", "trial_number", name="uq_leaderboard_study_trial"),
    )
    op.create_index("ix_leaderboard_task", "leaderboard", ["task"])
    op.create_index("ix_leaderboard_study", "leaderboard", ["study"])


def downgrade() -> None:
    op.drop_index("ix_leaderboard_study", table_name="leaderboard")
    op.drop_index("ix_leaderboard_task", table_name="leaderboard")
    op.drop_table("leaderboard")
    op.drop_index("ix_screenings_gain", table_name="screenings")
    op.drop_index("ix_screenings_target_revision", table_name="screenings")
    op.drop_index("ix_screenings_task", table_name="screenings")
    op.drop_table("screenings")
