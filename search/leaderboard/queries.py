"""The queries users run in the morning over the study's leaderboard rows: summary, one row, CSV.

The study writes one row per completed trial (`search.study.records`). The best composition of a task is
chosen on the search split only (invariant 2); held-out scores sit beside it, computed for the top trials
after the search, never used to rank. A row that failed a control guard (`feasible` false) is kept with
its control scores but never ranks as best; a multi-task row's `task` is its tasks joined by commas, its
`scores` hold every task, and `pareto` marks the non-dominated rows of a Pareto study.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from search.errors import SearchError
from search.study.records import query

# Keys of a row dict (`taskvec leaderboard --json`), item 3 of the search issue first.
CSV_KEYS = (
    "task",
    "study",
    "trial_number",
    "score_search",
    "score_heldout",
    "target_score_search",
    "target_score_heldout",
    "gain_search",
    "gain_heldout",
    "ingredients",
    "method",
    "worker",
    "created",
)


def summary(
    *, db_url: str | None = None, task: str | None = None, study: str | None = None
) -> list[dict[str, Any]]:
    """Per task: the target against the best feasible composition (chosen on the search split) and the gains.

    Returns:
        One dict per task: `task`, `study`, `trial_number`, `target_repo`, `target_score_search`,
        `target_score_heldout`, `best_score_search`, `best_score_heldout`, `gain_search`, `gain_heldout`,
        `ingredients`, `method`, `n_rows`.
    """
    rows = query(db_url=db_url, task=task, study=study, feasible_only=True)
    out: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["task"]] = counts.get(row["task"], 0) + 1
        if row["task"] in out:
            continue  # rows come best first per task
        out[row["task"]] = {
            "task": row["task"],
            "study": row["study"],
            "trial_number": row["trial_number"],
            "target_repo": row["target_repo"],
            "target_score_search": row["target_score_search"],
            "target_score_heldout": row["target_score_heldout"],
            "best_score_search": row["score_search"],
            "best_score_heldout": row["score_heldout"],
            "gain_search": row["gain_search"],
            "gain_heldout": row["gain_heldout"],
            "ingredients": row["ingredients"],
            "method": row["method"],
            "objective": row["objective"],
            "scores": row["scores"],
        }
    return [{**v, "n_rows": counts[k]} for k, v in out.items()]


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV (`CSV_KEYS`; ingredients as `repo@rev12=coef;...`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_KEYS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = dict(row)
        flat["ingredients"] = ";".join(
            f"{i['repo_id']}@{i['revision'][:12]}={i['coefficient']:.4f}" for i in row["ingredients"]
        )
        writer.writerow(flat)
    return buf.getvalue()


def get_row(*, study: str, trial: int | None = None, db_url: str | None = None) -> dict[str, Any]:
    """Trial `trial` of `study`, or its best feasible row by search score.

    Raises:
        SearchError: if the study has no such row.
    """
    rows = query(db_url=db_url, study=study)
    if not rows:
        raise SearchError(f"study {study!r} has no completed trial on the leaderboard")
    if trial is None:
        if not rows[0]["feasible"]:
            raise SearchError(f"study {study!r}: every trial failed a control guard; name one with --trial")
        return rows[0]
    for row in rows:
        if row["trial_number"] == trial:
            return row
    raise SearchError(f"study {study!r} has no completed trial {trial} on the leaderboard")
