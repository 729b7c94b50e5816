"""From Optuna trials to leaderboard rows: one row per completed trial, written through `records`.

Each completed trial is written right after it completes, and a sync pass at start and end writes any
completed trial still missing (a worker killed between Optuna's commit and ours).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.study.context import StudyContext, TargetScores
from search.study.objectives import combine, is_feasible
from search.study.records import existing_trial_numbers, update_pareto, upsert_rows
from search.study.space import coefficients_from_params
from search.study.surrogate import SURROGATE_ATTR


def trial_value(trial: FrozenTrial) -> float:
    """A finished trial's one number: its value, or the mean of a multi-objective trial's values."""
    values = trial.values or []
    return float(values[0]) if len(values) == 1 else float(sum(values) / max(1, len(values)))


def trial_feasible(trial: FrozenTrial) -> bool:
    """Whether every constraint of the trial (taskvec's control guards) holds."""
    return is_feasible(list(trial.constraints.values()))


def _task_scores(trial: FrozenTrial, context: StudyContext) -> dict[str, float]:
    """Task -> the trial's search score (a one-task trial's is its value, as it always stored it)."""
    stored = trial.user_attrs.get("scores")
    if stored is None:
        return {context.tasks[0]: float(trial.value)}
    return {t: float(v) for t, v in stored.items()}


def _metrics(trial: FrozenTrial, context: StudyContext, target: TargetScores, score: float) -> dict[str, Any]:
    """The row's `metrics`, in the compact layout one-task rows always had (no per-task level, no target)."""
    if len(context.tasks) == 1:
        return {"search": trial.user_attrs.get("metrics", {"score": score})}
    return {"search": trial.user_attrs.get("metrics", {}), "target": target.tasks}


def _constraints(trial: FrozenTrial, context: StudyContext, target: TargetScores) -> dict[str, Any]:
    violations = trial.constraints
    control_scores = trial.user_attrs.get("controls") or {}
    return {
        c.task: {
            "score_search": control_scores.get(c.task),
            "target_search": target.controls.get(c.task, {}).get("search"),
            "target_heldout": target.controls.get(c.task, {}).get("heldout"),
            "max_drop": c.max_drop,
            "violation": float(violations[c.task]),
        }
        for c in context.controls
        if c.task in violations
    }


def trial_row(trial: FrozenTrial, context: StudyContext, target: TargetScores) -> dict[str, Any]:
    """The leaderboard row of a completed trial, from the trial, the study's context and the target's scores.

    Returns:
        Column values of `search.tables.LeaderboardRow` (without held-out scores).
    """
    coefs = coefficients_from_params(trial.params, context.repos)
    ingredients = [
        {"repo_id": c.repo_id, "revision": c.revision, "coefficient": coef}
        for c, coef in zip(context.candidates, coefs, strict=True)
        if coef != 0.0
    ]
    task_scores = _task_scores(trial, context)
    kind = context.objective
    score = combine(task_scores, kind="mean") if kind == "pareto" else float(trial.value)
    return {
        "task": context.label,
        "study": context.study,
        "trial_number": trial.number,
        "state": "complete",
        "score_search": score,
        "metrics": _metrics(trial, context, target, score),
        "target_score_search": target.search,
        "target_score_heldout": target.heldout,
        "target_repo": context.target.repo_id,
        "target_revision": context.target.revision,
        "base_repo": context.base.repo_id,
        "base_revision": context.base.revision,
        "ingredients": ingredients,
        "method": context.method,
        "method_options": dict(context.method_options),
        "scorer": context.scorer.to_dict(),
        "split_fingerprints": context.split_fingerprints.to_dict(),
        "scores": {t: {"search": s, "heldout": None} for t, s in task_scores.items()},
        "objective": kind,
        "constraints": _constraints(trial, context, target),
        "feasible": is_feasible(list(trial.constraints.values())),
        "reference_scores": {t: r.to_dict() for t, r in context.references.items()} or None,
        "pareto": False,
        "examples_scored": int(trial.user_attrs.get("examples_scored", 0)),
        "worker": trial.user_attrs.get("worker", "unknown"),
        "created": trial.datetime_complete,
        "surrogate_score": trial.user_attrs.get(SURROGATE_ATTR),
    }


def write_trial(
    trial: FrozenTrial, context: StudyContext, target: TargetScores, *, db_url: str | None
) -> None:
    """Write one completed trial's row (and a Pareto study's front flags)."""
    upsert_rows([trial_row(trial, context, target)], db_url=db_url)
    if context.objective == "pareto":
        update_pareto(study=context.study, db_url=db_url)


def sync_leaderboard(
    study: optuna.Study, context: StudyContext, target: TargetScores, *, db_url: str | None
) -> int:
    """Write every completed trial missing from the leaderboard (e.g. killed between the two commits).

    Returns:
        The number of rows written.
    """
    done = existing_trial_numbers(study=context.study, db_url=db_url)
    missing = [
        trial_row(t, context, target)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.number not in done
    ]
    if missing:
        upsert_rows(missing, db_url=db_url)
    if context.objective == "pareto":
        update_pareto(study=context.study, db_url=db_url)
    return len(missing)
