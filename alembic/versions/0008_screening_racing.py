"""screenings: n_scored and eliminated_round (racing screens)

Revision ID: 0008
Revises: 0007

A racing screen (`search.screen.racing`) drops most candidates on a prefix of the search split; each row
says how many examples its lambdas were scored on (`n_scored`) and, for a dropped candidate, the round it
left the race in (`eliminated_round`). Rows written before 0008 were all scored on the whole split: their
`n_scored` is backfilled from their lambdas' `n`. Both columns are added in place (no table rebuild, which
on SQLite would copy `screenings` under the foreign key of `screening_logprobs`).
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("screenings", sa.Column("n_scored", sa.Integer(), nullable=True))
    op.add_column("screenings", sa.Column("eliminated_round", sa.Integer(), nullable=True))
    screenings = sa.table(
        "screenings", sa.column("id", sa.Integer()), sa.column("lambdas", sa.JSON()), sa.column("n_scored")
    )
    bind = op.get_bind()
    for row_id, lambdas in bind.execute(sa.select(screenings.c.id, screenings.c.lambdas)).all():
        n = max((int(t.get("n", 0)) for t in lambdas or []), default=None)
        bind.execute(sa.update(screenings).where(screenings.c.id == row_id).values(n_scored=n))


def downgrade() -> None:
    # SQLite drops a column in place since 3.35.
    op.drop_column("screenings", "eliminated_round")
    op.drop_column("screenings", "n_scored")
