"""screening_logprobs: per-example label log-probs of each screened lambda; leaderboard.surrogate_score

Revision ID: 0007
Revises: 0006

The surrogate (`search.study.surrogate`) predicts a composition from what screening computed, so each
screened lambda's per-example label log-probabilities (and the target's, at lambda 0) are kept in a child
table of `screenings`, deleted with their screening (ON DELETE CASCADE; taskvec's SQLite connections turn
foreign keys on). `leaderboard.surrogate_score` is a plain nullable column added in place (no table
rebuild, so the `leaderboard_scores` view of 0006 stays as it is).
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_logprobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "screening_id",
            sa.Integer(),
            sa.ForeignKey("screenings.id", ondelete="CASCADE", name="fk_screening_logprobs_screening"),
            nullable=False,
        ),
        sa.Column("lam", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_labels", sa.Integer(), nullable=False),
        sa.Column("positions", sa.LargeBinary(), nullable=False),
        sa.Column("logprobs", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("screening_id", "lam", name="uq_screening_logprobs_lambda"),
    )
    op.create_index("ix_screening_logprobs_screening_id", "screening_logprobs", ["screening_id"])
    op.add_column("leaderboard", sa.Column("surrogate_score", sa.Float(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column in place since 3.35; the view of 0006 does not name this column.
    op.drop_column("leaderboard", "surrogate_score")
    op.drop_index("ix_screening_logprobs_screening_id", table_name="screening_logprobs")
    op.drop_table("screening_logprobs")
