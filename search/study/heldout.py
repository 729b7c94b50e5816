"""Held-out scores of a study's best rows, computed after the search with the live model.

Selection never sees the held-out split (invariant 2): the top-N feasible rows by search score get their
held-out scores only when the search is over, reported beside them and never used to rank. The
leaderboard's `--refresh` (rows rebuilt from the registry, any study) uses `heldout_objective` too, so a
held-out objective is computed one way.
"""

from __future__ import annotations

from typing import Any

from search.errors import SearchError
from search.scoring.scorer import ScoreResult
from search.study.live import LiveStudy
from search.study.objectives import combine
from search.study.records import query, row_tasks, write_heldout


def heldout_objective(row: dict[str, Any], results: dict[str, ScoreResult]) -> float:
    """A row's objective on the held-out splits (the mean for pareto), normalised by its references'
    held-out scores for `normalized-mean`.

    Args:
        row: the leaderboard row (as `records.row_dict` gives it).
        results: task -> held-out `ScoreResult` (objective tasks; control tasks are ignored).
    """
    tasks, _ = row_tasks(row)
    kind = row["objective"] or "score"
    refs = {t: r.get("score_heldout") for t, r in (row.get("reference_scores") or {}).items()}
    return combine(
        {t: float(results[t].score) for t in tasks},
        kind="mean" if kind == "pareto" else kind,
        references={t: v for t, v in refs.items() if v is not None},
    )


def _score_live(live: LiveStudy, row: dict[str, Any]) -> dict[str, ScoreResult]:
    """Recompose a row of the live study on its model and score every task of it on held-out."""
    coefs = dict.fromkeys(live.repos, 0.0)
    for ing in row["ingredients"]:
        if ing["repo_id"] not in coefs:
            raise SearchError(
                f"study {live.name!r}, trial {row['trial_number']}: {ing['repo_id']} is not a candidate"
            )
        coefs[ing["repo_id"]] = float(ing["coefficient"])
    tasks, controls = row_tasks(row)
    live.composer.apply([coefs[r] for r in live.repos])
    return {task: live.heldout[task].score() for task in (*tasks, *controls)}


def _score_target(live: LiveStudy) -> dict[str, ScoreResult]:
    """The target's own held-out results (all coefficients 0) on the objective's tasks."""
    live.composer.apply([0.0] * len(live.repos))
    return {task: live.heldout[task].score() for task in live.context.tasks}


def score_top_heldout(live: LiveStudy, *, top_n: int, db_url: str | None) -> int:
    """Score the study's top-N feasible rows (by search score) lacking a held-out score, and write them.

    A multi-task row gets every task's held-out score and its objective on them; a guarded row also gets
    its control tasks' held-out scores. Every row also stores its and the target's per-example held-out
    predictions and the paired bootstrap interval of its gain over the target (invariant 6).

    Returns:
        The number of rows given a held-out score.
    """
    rows = query(db_url=db_url, study=live.name, feasible_only=True)
    todo = [r for r in rows[:top_n] if r["score_heldout"] is None]
    target = _score_target(live) if todo else {}
    for row in todo:
        results = _score_live(live, row)
        objective = heldout_objective(row, results)
        write_heldout(row, results, objective=objective, db_url=db_url, target=target)
    return len(todo)
