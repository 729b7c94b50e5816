"""The study's writes to the leaderboard table: one row per completed trial, held-out scores later.

Rows are written right after each trial completes (idempotent upsert on (study, trial number)), so a crash
loses at most the trial in flight. `search.leaderboard` reads and ranks them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from registry.db import session_scope
from search.errors import SearchError
from search.scoring.bootstrap import GainInterval, pack_predictions, stored_interval
from search.study.objectives import pareto_mask
from search.tables import LeaderboardRow, one_or_each, utcnow

if TYPE_CHECKING:  # the scorer imports torch; a leaderboard read must not
    from search.scoring.scorer import ScoreResult

ROW_KEYS = (
    "task",
    "study",
    "trial_number",
    "score_search",
    "score_heldout",
    "metrics",
    "target_score_search",
    "target_score_heldout",
    "gain_search",
    "gain_heldout",
    "ingredients",
    "method",
    "method_options",
    "scorer",
    "split_fingerprints",
    "worker",
    "created",
    "target_repo",
    "target_revision",
    "base_repo",
    "base_revision",
    "scores",
    "objective",
    "constraints",
    "pareto",
    "feasible",
    "reference_scores",
    "state",
    "examples_scored",
    "heldout_at",
    "gain_ci",
    "surrogate_score",
)

# Columns a re-written trial may not clear: held-out results and Pareto flags computed after the trial.

_KEEP_ON_UPDATE = (
    "score_heldout",
    "heldout_at",
    "id",
    "created",
    "pareto",
    "heldout_predictions",
    "gain_ci",
)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def row_dict(row: LeaderboardRow) -> dict[str, Any]:
    """A leaderboard row as a JSON-ready dict with `ROW_KEYS`."""
    out = {c.name: _iso(getattr(row, c.name)) for c in row.__table__.columns}
    out["gain_search"] = out["score_search"] - out["target_score_search"]
    heldout, target_heldout = out["score_heldout"], out["target_score_heldout"]
    out["gain_heldout"] = None if heldout is None or target_heldout is None else heldout - target_heldout
    return {k: out.get(k) for k in ROW_KEYS}


def upsert_rows(rows: Iterable[dict[str, Any]], *, db_url: str | None = None) -> int:
    """Insert or update rows keyed by (study, trial_number); held-out results already there are kept.

    Returns:
        The number of rows written.
    """

    n = 0
    for values in rows:
        for attempt in range(2):
            try:
                with session_scope(db_url) as session:
                    existing = session.execute(
                        select(LeaderboardRow).where(
                            LeaderboardRow.study == values["study"],
                            LeaderboardRow.trial_number == values["trial_number"],
                        )
                    ).scalar_one_or_none()
                    if existing is None:
                        session.add(LeaderboardRow(**{k: v for k, v in values.items() if v is not None}))
                    else:
                        for key, value in values.items():
                            if key not in _KEEP_ON_UPDATE and not (
                                key == "target_score_heldout" and value is None
                            ):
                                setattr(existing, key, value)
                break
            except IntegrityError:
                if attempt == 1:
                    raise  # the row exists yet cannot be read back: a real inconsistency
        n += 1
    return n


def existing_trial_numbers(*, study: str, db_url: str | None = None) -> set[int]:
    """Trial numbers of `study` already on the leaderboard."""

    with session_scope(db_url) as session:
        return set(
            session.execute(
                select(LeaderboardRow.trial_number).where(LeaderboardRow.study == study)
            ).scalars()
        )


def update_pareto(*, study: str, db_url: str | None = None) -> int:
    """Recompute the study's Pareto flags from its rows' per-task search scores (feasible rows only).

    Called after every row a Pareto study writes; concurrent workers may interleave, and each worker's
    last call (at its end) leaves the flags exact.

    Returns:
        The number of rows on the front.
    """

    with session_scope(db_url) as session:
        rows = list(session.execute(select(LeaderboardRow).where(LeaderboardRow.study == study)).scalars())
        feasible = [r for r in rows if r.feasible]
        if not feasible:
            return 0
        tasks = sorted(feasible[0].scores)
        mask = pareto_mask([[float(r.scores[t]["search"]) for t in tasks] for r in feasible])
        front = {r.id for r, on in zip(feasible, mask, strict=True) if on}
        for r in rows:
            flag = r.id in front
            if r.pareto != flag:
                r.pareto = flag
        return len(front)


def row_tasks(row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(objective tasks, control tasks) of a leaderboard row."""
    return list(row["scores"] or {row["task"]: {}}), list(row["constraints"] or {})


def _in_split_order(result: ScoreResult) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of a full held-out pass in the split's own row order (scorers permute it)."""
    labels, preds = np.asarray(result.labels), np.asarray(result.predictions)
    if len(result.positions) != len(preds):
        return labels, preds
    order = np.argsort(result.positions, kind="stable")
    return labels[order], preds[order]


def heldout_predictions(
    row: dict[str, Any], results: dict[str, ScoreResult], target: dict[str, ScoreResult]
) -> dict[str, Any]:
    """The `heldout_predictions` a row stores: its objective tasks' per-example predictions and the target's.

    Raises:
        SearchError: if the row and the target were not scored on the same examples.
    """
    tasks, _ = row_tasks(row)
    per_task = {}
    for t in tasks:
        labels, preds = _in_split_order(results[t])
        target_labels, target_preds = _in_split_order(target[t])
        if results[t].fingerprint != target[t].fingerprint or not np.array_equal(labels, target_labels):
            raise SearchError(
                f"study {row['study']!r} trial {row['trial_number']}: {t}: row and target were scored on "
                "different held-out examples"
            )
        per_task[t] = {
            "fingerprint": results[t].fingerprint,
            "labels": labels,
            "row": preds,
            "target": target_preds,
        }
    return pack_predictions(per_task)


def row_interval(row: dict[str, Any], stored: dict[str, Any], **kwargs: Any) -> GainInterval:
    """The held-out gain over the target with its paired bootstrap interval, from stored predictions.

    Args:
        row: the leaderboard row (its objective, and normalized-mean's fixed reference scores).
        stored: its `heldout_predictions`.
        kwargs: `resamples`, `seed`, `level` of `search.scoring.bootstrap.stored_interval`.
    """
    refs = {t: r.get("score_heldout") for t, r in (row.get("reference_scores") or {}).items()}
    return stored_interval(
        stored,
        objective=row["objective"] or "score",
        references={t: float(v) for t, v in refs.items() if v is not None},
        **kwargs,
    )


def write_heldout(
    row: dict[str, Any],
    results: dict[str, ScoreResult],
    *,
    objective: float,
    db_url: str | None,
    target: dict[str, ScoreResult] | None = None,
) -> None:
    """Store a row's held-out results: every task's score and metrics, its objective, control scores, and
    (given the target's held-out results) both models' predictions and the gain's bootstrap interval.

    Args:
        row: the leaderboard row (as `row_dict` gives it).
        results: task (objective tasks and controls) -> held-out `ScoreResult`.
        objective: the row's objective on the held-out splits.
        db_url: taskvec database URL.
        target: objective task -> the target's held-out `ScoreResult` on the same examples.
    """
    tasks, controls = row_tasks(row)
    stored = None if target is None else heldout_predictions(row, results, target)
    interval = None if stored is None else row_interval(row, stored)
    with session_scope(db_url) as session:
        db_row = session.execute(
            select(LeaderboardRow).where(
                LeaderboardRow.study == row["study"],
                LeaderboardRow.trial_number == row["trial_number"],
            )
        ).scalar_one()
        db_row.score_heldout = objective
        heldout_metrics = one_or_each(
            {t: {k: float(v) for k, v in results[t].metrics.items()} for t in tasks}
        )
        db_row.metrics = {**db_row.metrics, "heldout": heldout_metrics}
        scores = {k: dict(v) for k, v in db_row.scores.items()}
        for t in tasks:
            scores.setdefault(t, {})["heldout"] = float(results[t].score)
        db_row.scores = scores
        if controls:
            db_row.constraints = {
                c: {**v, "score_heldout": float(results[c].score)} for c, v in db_row.constraints.items()
            }
        if stored is not None and interval is not None:
            db_row.heldout_predictions = stored
            db_row.gain_ci = interval.to_dict()
        db_row.heldout_at = utcnow()


def stored_predictions(*, study: str, trial: int, db_url: str | None = None) -> dict[str, Any] | None:
    """A row's stored `heldout_predictions` (None for a row scored before they were stored)."""
    with session_scope(db_url) as session:
        return session.execute(
            select(LeaderboardRow.heldout_predictions).where(
                LeaderboardRow.study == study, LeaderboardRow.trial_number == trial
            )
        ).scalar_one_or_none()


def query(
    *,
    db_url: str | None = None,
    task: str | None = None,
    study: str | None = None,
    top: int | None = None,
    feasible_only: bool = False,
    pareto_only: bool = False,
) -> list[dict[str, Any]]:
    """Leaderboard rows: feasible before infeasible, then best search score first.

    Args:
        db_url: taskvec database URL.
        task: only this task (a multi-task row's task is its tasks joined by commas).
        study: only this study.
        top: at most this many rows per task.
        feasible_only: leave out rows that failed a control guard.
        pareto_only: only rows on their study's Pareto front.

    Returns:
        Row dicts with `ROW_KEYS`.
    """
    stmt = select(LeaderboardRow)
    if task:
        stmt = stmt.where(LeaderboardRow.task == task)
    if study:
        stmt = stmt.where(LeaderboardRow.study == study)
    if feasible_only:
        stmt = stmt.where(LeaderboardRow.feasible.is_(True))
    if pareto_only:
        stmt = stmt.where(LeaderboardRow.pareto.is_(True))
    stmt = stmt.order_by(
        LeaderboardRow.task,
        LeaderboardRow.feasible.desc(),
        LeaderboardRow.score_search.desc(),
        LeaderboardRow.study,
        LeaderboardRow.trial_number,
    )
    with session_scope(db_url) as session:
        rows = [row_dict(r) for r in session.execute(stmt).scalars()]
    if top is None:
        return rows
    kept: list[dict[str, Any]] = []
    per_task: dict[str, int] = {}
    for row in rows:
        per_task[row["task"]] = per_task.get(row["task"], 0) + 1
        if per_task[row["task"]] <= top:
            kept.append(row)
    return kept


def study_best(*, study: str, db_url: str | None = None) -> dict[str, Any] | None:
    """The study's best feasible row by search score (None when it has no feasible completed trial)."""
    rows = query(db_url=db_url, study=study, top=1, feasible_only=True)
    return rows[0] if rows else None
