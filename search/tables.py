"""Search's tables on the registry's declarative `Base`: screenings and the leaderboard.

Both tables are created by the Alembic migrations `alembic/versions/0002_search_tables.py`,
`0003_multitask_leaderboard.py` and `0004_heldout_predictions.py`; the ORM classes here must stay in step
with them. JSON columns use
SQLAlchemy's generic `JSON` so that the same schema runs on SQLite and PostgreSQL.

The leaderboard is shaped for multi-task objectives from the start: `scores` maps task -> {search,
heldout}, `objective` names how those scores were combined, `constraints` holds guard values and
`pareto` marks non-dominated rows, `feasible` whether every control guard held. A single-task search
fills `scores` with one task.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry.db import Base

T = TypeVar("T")


def one_or_each(per_task: Mapping[str, T]) -> T | dict[str, T]:
    """The stored form of a per-task value: the value itself for one task (as one-task studies always
    stored it), else task -> value."""
    if len(per_task) == 1:
        return next(iter(per_task.values()))
    return dict(per_task)


def utcnow() -> datetime:
    """Timezone-aware now; stored as UTC."""
    return datetime.now(UTC)


class Screening(Base):
    """One candidate screened alone against one target: `theta_T + lambda * tau_i` over a lambda grid."""

    __tablename__ = "screenings"
    __table_args__ = (
        UniqueConstraint(
            "task",
            "target_revision",
            "candidate_revision",
            "split_fingerprint",
            name="uq_screenings_task_target_candidate_split",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(32), index=True)
    target_repo: Mapped[str] = mapped_column(String(512))
    target_revision: Mapped[str] = mapped_column(String(128), index=True)
    candidate_repo: Mapped[str] = mapped_column(String(512))
    candidate_revision: Mapped[str] = mapped_column(String(128))
    base_repo: Mapped[str] = mapped_column(String(512))
    base_revision: Mapped[str] = mapped_column(String(128))
    # [{"lambda": float, "score": float, "n": int}] in the order tried; skipped lambdas are absent.
    lambdas: Mapped[list] = mapped_column(JSON)
    best_lambda: Mapped[float] = mapped_column(Float)
    best_score: Mapped[float] = mapped_column(Float)
    target_score: Mapped[float] = mapped_column(Float)
    gain: Mapped[float] = mapped_column(Float, index=True)
    split_fingerprint: Mapped[str] = mapped_column(String(128))
    scorer: Mapped[dict] = mapped_column(JSON)
    worker: Mapped[str] = mapped_column(String(256))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Racing screens (`search.screen.racing`): examples of the prefix the row's lambdas were scored on (the
    # search split's size for a full-split row), and the round a dropped candidate left the race in (None:
    # scored on the whole split, or still racing when n_scored is smaller).
    n_scored: Mapped[int | None] = mapped_column(Integer, nullable=True)
    eliminated_round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # What the grid computed per example, for the surrogate; deleted with the screening (the database's
    # ON DELETE CASCADE, and the ORM's for a session delete).
    logprobs: Mapped[list[ScreeningLogprobs]] = relationship(
        back_populates="screening", cascade="all, delete-orphan", passive_deletes=True
    )


class ScreeningLogprobs(Base):
    """Per-example label log-probabilities of one screened lambda (lambda 0: the target alone).

    `logprobs` holds float16 bytes of shape (n, n_labels), rows in `positions` order (int32 bytes: each
    example's row in the search split), columns in the task's label id order (`search.screen.store`).
    """

    __tablename__ = "screening_logprobs"
    __table_args__ = (UniqueConstraint("screening_id", "lam", name="uq_screening_logprobs_lambda"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    screening_id: Mapped[int] = mapped_column(
        ForeignKey("screenings.id", ondelete="CASCADE", name="fk_screening_logprobs_screening"), index=True
    )
    lam: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    n_labels: Mapped[int] = mapped_column(Integer)
    positions: Mapped[bytes] = mapped_column(LargeBinary)
    logprobs: Mapped[bytes] = mapped_column(LargeBinary)
    screening: Mapped[Screening] = relationship(back_populates="logprobs")


def screening_state(row: Mapping[str, object]) -> str:
    """`full` (scored on the whole search split), `eliminated` (dropped by a racing screen on a prefix) or
    `racing` (a racing screen stored its last finished round; a rerun carries it on), from a screening
    dict's `n_scored`, `eliminated_round` and `scorer.search_size` (a row without them is `full`)."""
    if row.get("eliminated_round") is not None:
        return "eliminated"
    n, scorer = row.get("n_scored"), row.get("scorer")
    size = scorer.get("search_size") if isinstance(scorer, Mapping) else None
    if not isinstance(n, int) or not isinstance(size, int) or n >= size:
        return "full"
    return "racing"


class LeaderboardRow(Base):
    """One completed search trial: a composition, its scores and everything needed to rebuild it."""

    __tablename__ = "leaderboard"
    __table_args__ = (UniqueConstraint("study", "trial_number", name="uq_leaderboard_study_trial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(32), index=True)
    study: Mapped[str] = mapped_column(String(256), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="complete")
    score_search: Mapped[float] = mapped_column(Float)
    score_heldout: Mapped[float | None] = mapped_column(Float, nullable=True)
    # {"search": {metric: value}, "heldout": {metric: value}}
    metrics: Mapped[dict] = mapped_column(JSON)
    target_score_search: Mapped[float] = mapped_column(Float)
    target_score_heldout: Mapped[float | None] = mapped_column(Float, nullable=True)
    target_repo: Mapped[str] = mapped_column(String(512))
    target_revision: Mapped[str] = mapped_column(String(128))
    base_repo: Mapped[str] = mapped_column(String(512))
    base_revision: Mapped[str] = mapped_column(String(128))
    # [{"repo_id", "revision", "coefficient"}] for the candidates included in the composition.
    ingredients: Mapped[list] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(64))
    method_options: Mapped[dict] = mapped_column(JSON)
    scorer: Mapped[dict] = mapped_column(JSON)
    # {"search": fingerprint, "heldout": fingerprint}
    split_fingerprints: Mapped[dict] = mapped_column(JSON)
    # Multi-task ready: task -> {"search": score, "heldout": score | None}.
    scores: Mapped[dict] = mapped_column(JSON)
    objective: Mapped[str] = mapped_column(String(64), default="score")
    constraints: Mapped[dict] = mapped_column(JSON, default=dict)
    pareto: Mapped[bool] = mapped_column(Boolean, default=False)
    # False when a control guard failed (`constraints` says which); infeasible rows never rank as best.
    feasible: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true(), index=True)
    # Multi-task: task -> the task's own fine-tuned model {repo_id, revision, score_search, score_heldout}.
    reference_scores: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    examples_scored: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str] = mapped_column(String(256))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heldout_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Written with the held-out scores, so the gain's interval can be recomputed without rescoring:
    # {"version": 1, "tasks": {task: {"fingerprint", "labels", "row", "target"}}}, each a string of one
    # character per held-out example in the split's order (`search.scoring.bootstrap.encode_labels`).
    heldout_predictions: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # The held-out gain over the target with its paired bootstrap interval (`GainInterval.to_dict`):
    # {"lo", "hi", "gain", "level", "resamples", "seed", "n", "method"}; None before held-out scoring.
    gain_ci: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # The surrogate's prediction of `score_search`, made before the trial was scored (None: no surrogate).
    surrogate_score: Mapped[float | None] = mapped_column(Float, nullable=True)


class BaselineRow(Base):
    """One obvious alternative scored beside a study's result (`search.study.baselines`), both splits."""

    __tablename__ = "baselines"
    __table_args__ = (UniqueConstraint("study", "name", name="uq_baselines_study_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study: Mapped[str] = mapped_column(String(256), index=True)
    task: Mapped[str] = mapped_column(String(128), index=True)  # the study's task label (`a,b` for several)
    name: Mapped[str] = mapped_column(
        String(32)
    )  # target | best-single | add-all | global-lambda | search-best
    objective: Mapped[str] = mapped_column(String(64))
    # repo id -> lambda of the vectors it adds; empty for the target alone.
    coefficients: Mapped[dict] = mapped_column(JSON)
    # task -> {"search": score, "heldout": score}
    scores: Mapped[dict] = mapped_column(JSON)
    objective_search: Mapped[float] = mapped_column(Float)
    objective_heldout: Mapped[float] = mapped_column(Float)
    # The held-out objective's gain over the target with its paired bootstrap interval (`GainInterval`).
    gain_ci: Mapped[dict] = mapped_column(JSON)
    # search-best only: the interval of its held-out objective minus best-single's.
    versus_single_ci: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # task -> held-out predicted label ids in the split's order (`encode_labels`), to recompute intervals.
    heldout_predictions: Mapped[dict] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def worker_id() -> str:
    """`hostname:pid` of this process, stored with every row it writes."""
    return f"{socket.gethostname()}:{os.getpid()}"
