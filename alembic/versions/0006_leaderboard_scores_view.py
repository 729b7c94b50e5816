"""leaderboard_scores: a view of the leaderboard with one row per trial and each task's scores as columns

Revision ID: 0006
Revises: 0005

For `sqlite3` and pandas users (README, "Query the database directly"): the JSON columns (`scores`,
`gain_ci`, `scorer`) read as plain columns. The task list is the four GLUE target tasks as of this
revision, frozen here as a migration must be; a task added later needs a new revision that replaces the
view. JSON is read per dialect (SQLite's `json_extract`, PostgreSQL's `->`/`->>`), so the SQL differs.

A later migration that rebuilds `leaderboard` on SQLite (batch mode: copy, drop, rename) must drop this
view first and create it again after: SQLite refuses to rename a table over a view that names it.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

VIEW = "leaderboard_scores"
TASKS = ("mrpc", "rte", "cola", "sst2")
SPLITS = ("search", "heldout")


def _json_number(dialect: str, column: str, *path: str) -> str:
    """A number inside a JSON column as SQL: NULL when the key is absent or JSON null."""
    if dialect == "postgresql":
        steps = "".join(f" -> '{p}'" for p in path[:-1]) + f" ->> '{path[-1]}'"
        return f"CAST(l.{column}{steps} AS DOUBLE PRECISION)"
    return f"json_extract(l.{column}, '$.{'.'.join(path)}')"


def _json_text(dialect: str, column: str, key: str) -> str:
    if dialect == "postgresql":
        return f"l.{column} ->> '{key}'"
    return f"json_extract(l.{column}, '$.{key}')"


def view_sql(dialect: str) -> str:
    """`CREATE VIEW leaderboard_scores` for `dialect` (`sqlite` or `postgresql`)."""
    per_task = ",\n    ".join(
        f"{_json_number(dialect, 'scores', task, split)} AS {task}_{split}"
        for task in TASKS
        for split in SPLITS
    )
    return f"""CREATE VIEW {VIEW} AS
SELECT
    l.study,
    l.trial_number,
    l.study || '#' || CAST(l.trial_number AS VARCHAR(16)) AS study_trial,
    l.task,
    l.objective,
    l.feasible,
    l.pareto,
    l.score_search,
    l.score_heldout,
    l.target_score_search,
    l.target_score_heldout,
    l.score_search - l.target_score_search AS gain_search,
    l.score_heldout - l.target_score_heldout AS gain_heldout,
    {_json_number(dialect, "gain_ci", "lo")} AS gain_ci_lo,
    {_json_number(dialect, "gain_ci", "hi")} AS gain_ci_hi,
    {_json_number(dialect, "gain_ci", "level")} AS gain_ci_level,
    {per_task},
    COALESCE({_json_text(dialect, "scorer", "search_from")}, 'train') AS search_from,
    l.method,
    json_array_length(l.ingredients) AS n_ingredients,
    l.ingredients,
    l.target_repo,
    l.target_revision,
    l.base_repo,
    l.base_revision,
    l.examples_scored,
    l.worker,
    l.created,
    l.heldout_at
FROM leaderboard AS l"""


def upgrade() -> None:
    dialect = op.get_context().dialect.name  # also in offline mode (`alembic upgrade --sql`)
    # A database rebuilt after an interrupted migration may keep the view while its tables were dropped.
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
    op.execute(view_sql(dialect))


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {VIEW}")
