"""What a search maximises when it scores a composition on one or several tasks, and its guards.

- `score`: one task, the paper's score on its search split (the single-task search).
- `mean`: several tasks, the mean of their paper scores.
- `normalized-mean`: several tasks, the mean of each score divided by that task's own fine-tuned model's
  score, x100 (the paper's *normalized accuracy*: 100 means "as good as the individual fine-tunes").
- `pareto`: several tasks, one objective each (a multi-objective study); rows on the non-dominated front
  are marked on the leaderboard. Its single summary number is the plain mean.

A *control* guard (`--control TASK[:MAX_DROP]`) makes a composition infeasible when its score on TASK falls
more than MAX_DROP points below the target's: the paper's principle that an edit should barely move
control tasks. Optuna's constraint convention is used throughout: a value <= 0 is satisfied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from search.errors import SearchError
from search.tasks.glue import get_task

OBJECTIVES = ("score", "mean", "normalized-mean", "pareto")
MULTI_TASK_OBJECTIVES = ("mean", "normalized-mean", "pareto")
DEFAULT_MAX_DROP = 1.0


@dataclass(frozen=True)
class Control:
    """A control task and the largest drop below the target's score it tolerates (points x100).

    Attributes:
        task: a GLUE task scored on its search split.
        max_drop: tolerated drop, in the task's score points.
    """

    task: str
    max_drop: float = DEFAULT_MAX_DROP

    def violation(self, *, score: float, target_score: float) -> float:
        """Optuna's constraint value: positive (infeasible) when the drop exceeds `max_drop`."""
        return (target_score - score) - self.max_drop

    def as_text(self) -> str:
        return f"{self.task}:{self.max_drop:g}"


def parse_control(text: str) -> Control:
    """`cola` or `cola:0.5` -> a `Control`.

    Raises:
        SearchError: for an unknown task or a drop that is not a non-negative number.
    """
    task, _, drop = text.strip().partition(":")
    try:
        get_task(task)
    except Exception as exc:
        raise SearchError(f"--control {text!r}: {exc}") from exc
    if not drop:
        return Control(task=task)
    try:
        max_drop = float(drop)
    except ValueError as exc:
        raise SearchError(f"--control {text!r}: MAX_DROP must be a number of points, e.g. cola:1.0") from exc
    if not max_drop >= 0:
        raise SearchError(f"--control {text!r}: MAX_DROP must be non-negative")
    return Control(task=task, max_drop=max_drop)


def parse_reference(text: str) -> tuple[str, str]:
    """`rte=org/t5-base-rte` -> (task, repo or folder).

    Raises:
        SearchError: if the text is not TASK=REPO_OR_PATH with a known task.
    """
    task, sep, repo = text.partition("=")
    task, repo = task.strip(), repo.strip()
    if not sep or not task or not repo:
        raise SearchError(f"--reference {text!r}: expected TASK=REPO_OR_PATH (e.g. rte=org/t5-base-rte)")
    try:
        get_task(task)
    except Exception as exc:
        raise SearchError(f"--reference {text!r}: {exc}") from exc
    return task, repo


def resolve_objective(objective: str | None, tasks: Sequence[str]) -> str:
    """The objective kind for these tasks (`score` for one task, `mean` by default for several).

    Raises:
        SearchError: for an unknown kind, or a multi-task kind asked of one task (or the reverse).
    """
    if objective in (None, "", "auto"):
        return "score" if len(tasks) == 1 else "mean"
    if objective not in OBJECTIVES:
        raise SearchError(f"unknown objective {objective!r} (use {', '.join(OBJECTIVES)})")
    if len(tasks) == 1:
        if objective in ("score", "mean"):
            return "score"
        raise SearchError(f"--objective {objective} needs several --tasks (e.g. --tasks mrpc,rte,cola,sst2)")
    if objective == "score":
        raise SearchError(
            f"--objective score takes one task; for several use {', '.join(MULTI_TASK_OBJECTIVES)}"
        )
    return objective


def combine(
    scores: Mapping[str, float], *, kind: str, references: Mapping[str, float] | None = None
) -> float:
    """One number from per-task scores.

    Args:
        scores: task -> paper score (x100).
        kind: an objective of `OBJECTIVES`.
        references: task -> the task's own fine-tuned score (needed by `normalized-mean`).

    Returns:
        The score (`score`), the mean (`mean`, `pareto`), or 100 * mean(score / reference).

    Raises:
        SearchError: for no scores, a missing or non-positive reference, or an unknown kind.
    """
    if not scores:
        raise SearchError("no task scores to combine")
    if kind == "score":
        if len(scores) != 1:
            raise SearchError(f"objective score takes one task, got {sorted(scores)}")
        return float(next(iter(scores.values())))
    if kind in ("mean", "pareto"):
        return float(sum(scores.values()) / len(scores))
    if kind == "normalized-mean":
        refs = references or {}
        total = 0.0
        for task, score in scores.items():
            ref = refs.get(task)
            if ref is None:
                raise SearchError(f"normalized-mean: no fine-tuned reference score for {task}")
            if not ref > 0:
                raise SearchError(
                    f"normalized-mean: {task}'s fine-tuned reference scores {ref:.2f}; "
                    "a score can only be normalised by a positive reference (use --objective mean)"
                )
            total += score / ref
        return 100.0 * total / len(scores)
    raise SearchError(f"unknown objective {kind!r} (use {', '.join(OBJECTIVES)})")


def is_feasible(violations: Sequence[float] | Mapping[str, Mapping[str, float]] | None) -> bool:
    """Whether every guard holds: a list of constraint values, or a row's `constraints` mapping."""
    if not violations:
        return True
    if isinstance(violations, Mapping):
        return all(float(v.get("violation", 0.0)) <= 0.0 for v in violations.values())
    return all(float(v) <= 0.0 for v in violations)


def pareto_mask(points: Sequence[Sequence[float]]) -> list[bool]:
    """Which points no other point dominates, every coordinate maximised.

    A point dominates another when it is at least as good everywhere and better somewhere; equal points
    do not dominate each other, so duplicates of a front point are all on the front.

    Args:
        points: one sequence of objective values per row, all of the same length.

    Returns:
        One flag per point.
    """
    if len(points) == 0:
        return []
    values = np.asarray(points, dtype=float)
    if values.ndim != 2:
        raise ValueError("points must all have the same number of objectives")
    # Row i is dominated if some j has values[j] >= values[i] everywhere and > somewhere.
    ge = (values[:, None, :] >= values[None, :, :]).all(axis=2)  # ge[j, i]: j at least as good as i
    gt = (values[:, None, :] > values[None, :, :]).any(axis=2)
    dominated = (ge & gt).any(axis=0)
    return [not bool(d) for d in dominated]
