"""One trial: compose in place, score nested prefixes of every task, report to the pruner, check the guards.

A trial composes `theta_T + combine(lambda_i tau_i)` in place on ONE live model per worker (the Composer;
never a reload) and scores it on nested prefixes of each task's search split, reporting the combined
score after each rung to the pruner. Control guards are scored after the objective on their own search
split and fed to the sampler as Optuna constraints.

The quota: before a trial starts it counts the live or finished trials numbered before it; if they
already fill the study's total the trial is cancelled (marked failed, never scored), so several workers
sharing a study never finish more than `n_trials`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import optuna
from optuna.trial import TrialState

from search.scoring.prefix import NestedPrefixScorer
from search.scoring.scorer import Scorer
from search.study.objectives import Control, combine
from search.study.space import lambda_param, use_param
from search.study.surrogate import SURROGATE_ATTR
from search.tables import one_or_each, worker_id
from search.vectors import Composer

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# States that take a place in the quota: finished, or going to finish unless their worker dies.
QUOTA_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class QuotaReached(Exception):
    """Raised in a trial that would exceed the study's total; the trial is marked failed, never scored."""


class TrialCounts(NamedTuple):
    complete: int
    pruned: int
    running: int
    waiting: int

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def trial_counts(study: optuna.Study) -> TrialCounts:
    """The study's trials in each quota state."""
    counts = dict.fromkeys(QUOTA_STATES, 0)
    for t in study.get_trials(deepcopy=False, states=QUOTA_STATES):
        counts[t.state] += 1
    return TrialCounts(
        counts[TrialState.COMPLETE],
        counts[TrialState.PRUNED],
        counts[TrialState.RUNNING],
        counts[TrialState.WAITING],
    )


class InterruptGate:
    """Ctrl-C at safe points only: at once while a trial tagged with this worker is scoring, else deferred.

    Between a trial's creation and its worker tag an interrupt would leave a RUNNING trial nobody can claim,
    and inside a database call it interrupts SQLAlchemy mid-fetch; so the search keeps the gate closed
    except around scoring (where a worker spends its time), and a deferred Ctrl-C is raised when the gate
    next opens or at the search loop's next turn. Installed only in the main thread (where Python runs
    signal handlers); elsewhere it does nothing.
    """

    def __init__(self) -> None:
        self.is_open = False
        self.pending = False
        self._previous: Any = None

    def __enter__(self) -> InterruptGate:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.is_open:
            raise KeyboardInterrupt
        self.pending = True

    def open(self) -> None:
        """Let Ctrl-C through (raising one that arrived while closed)."""
        self.is_open = True
        self.check()

    def close(self) -> None:
        self.is_open = False

    def check(self) -> None:
        """Raise a deferred Ctrl-C now."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@dataclass(frozen=True)
class GuardScorer:
    """A control guard bound to the live model: its search-split scorer and the target's own score."""

    control: Control
    scorer: Scorer
    target_score: float

    def violation(self, score: float) -> float:
        """Optuna's constraint value of a composition scoring `score` (positive: infeasible)."""
        return self.control.violation(score=score, target_score=self.target_score)


class Objective:
    """Composes in place, scores nested prefixes of every task and reports them to the pruner.

    Args:
        composer: holds the target weights and candidate vectors; `apply(coefs)` rewrites the live model.
        scorers: task -> nested-prefix scorer bound to the live model and that task's search split, in the
            order the tasks are reported.
        repos: candidate repo ids, in the composer's vector order.
        lambda_max: bound of every coefficient.
        n_trials: the study's quota of finished trials.
        pruning: whether to report intermediate prefixes.
        kind: objective kind (`search.study.objectives`).
        references: task -> the task's fine-tuned reference score on its search split (normalized-mean).
        guards: control guards, scored after the objective.
        gate: opened while the tagged trial scores (see `InterruptGate`); None lets Ctrl-C through always.
        surrogate: the surrogate's prediction of a composition's score, kept as the trial's
            `surrogate_score` (made before it is scored) where its proposer did not already set it.
    """

    def __init__(
        self,
        *,
        composer: Composer,
        scorers: dict[str, NestedPrefixScorer],
        repos: Sequence[str],
        lambda_max: float,
        n_trials: int,
        pruning: bool,
        kind: str = "score",
        references: dict[str, float] | None = None,
        guards: Sequence[GuardScorer] = (),
        gate: InterruptGate | None = None,
        surrogate: Callable[[list[float]], float] | None = None,
    ) -> None:
        self.composer = composer
        self.surrogate = surrogate
        self.gate = gate
        self.scorers = dict(scorers)
        self.tasks = list(self.scorers)
        self.repos = list(repos)
        self.lambda_max = lambda_max
        self.n_trials = n_trials
        self.kind = kind
        # Optuna prunes single objectives only.
        self.pruning = pruning and kind != "pareto"
        self.references = dict(references or {})
        self.guards = list(guards)
        self.n_rungs = max(len(s.sizes) for s in self.scorers.values())
        self.worker = worker_id()

    @property
    def steps(self) -> list[int]:
        """Examples scored over all tasks after each rung: the pruner's resources (one task: its prefixes)."""
        return [
            sum(s.sizes[min(k, len(s.sizes) - 1)] for s in self.scorers.values()) for k in range(self.n_rungs)
        ]

    def suggest(self, trial: optuna.Trial) -> list[float]:
        coefs = []
        for repo in self.repos:
            use = trial.suggest_categorical(use_param(repo), [False, True])
            coefs.append(trial.suggest_float(lambda_param(repo), 0.0, self.lambda_max) if use else 0.0)
        return coefs

    def value(self, scores: dict[str, float]) -> float:
        """The single number reported and maximised (the mean for pareto, which is only displayed)."""
        return combine(scores, kind=self.kind, references=self.references)

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Open the gate for CPU work (composing, scoring); database calls stay outside it."""
        if self.gate is None:
            yield
            return
        self.gate.open()
        try:
            yield
        finally:
            self.gate.close()

    def iter_rungs(self) -> Iterator[tuple[int, dict[str, dict[str, float]]]]:
        """Yield `(examples scored so far, task -> metrics on its prefix)` after each rung, every task once.

        A task with fewer rungs (a tiny split) keeps its last, complete metrics in later rungs.
        """
        iters = {t: s.iter_scores() for t, s in self.scorers.items()}
        latest: dict[str, tuple[int, dict[str, float]]] = {}
        for rung in range(self.n_rungs):
            for task, scorer in self.scorers.items():
                if rung < len(scorer.sizes):
                    with self._interruptible():
                        latest[task] = next(iters[task])
            yield sum(n for n, _ in latest.values()), {t: m for t, (_, m) in latest.items()}

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        ahead = [
            t for t in trial.study.get_trials(deepcopy=False, states=QUOTA_STATES) if t.number < trial.number
        ]
        if len(ahead) >= self.n_trials:
            raise QuotaReached(f"trial {trial.number}: the study already has {self.n_trials} trials")
        trial.set_user_attr("worker", self.worker)
        # Tagged: from here an interrupt fails this trial, and `storage.fail_own_running` finds it.
        coefs = self.suggest(trial)
        if self.surrogate is not None and SURROGATE_ATTR not in trial.user_attrs:
            trial.set_user_attr(SURROGATE_ATTR, float(self.surrogate(coefs)))
        with self._interruptible():
            self.composer.apply(coefs)
        step, per_task = self._score_rungs(trial)
        scores = {t: float(m["score"]) for t, m in per_task.items()}
        # Stored in the compact one-task layout trials always had (`trials.trial_row` reads both).
        trial.set_user_attr(
            "metrics", one_or_each({t: {k: float(v) for k, v in m.items()} for t, m in per_task.items()})
        )
        if len(scores) > 1:
            trial.set_user_attr("scores", scores)
        examples = step + self._score_guards(trial)
        trial.set_user_attr("examples_scored", examples)
        if self.kind == "pareto":
            return [scores[t] for t in self.tasks]
        return float(self.value(scores))

    def _score_rungs(self, trial: optuna.Trial) -> tuple[int, dict[str, dict[str, float]]]:
        """Score every rung, reporting each to the pruner; `(examples scored, task -> final metrics)`.

        Raises:
            optuna.TrialPruned: when the pruner stops the trial at a rung before the last.
        """
        step, per_task = 0, {}
        for rung, (step, per_task) in enumerate(self.iter_rungs()):
            if not self.pruning:
                continue
            value = self.value({t: m["score"] for t, m in per_task.items()})
            # Each prefix adds only its new examples: a trial stopped here scored `step` examples.
            trial.report(value, step)
            if rung < self.n_rungs - 1 and trial.should_prune():
                trial.set_user_attr("examples_scored", step)
                raise optuna.TrialPruned(f"score {value:.2f} on {step} examples")
        return step, per_task

    def _score_guards(self, trial: optuna.Trial) -> int:
        """Score the control guards and set them as the trial's constraints; the examples they scored."""
        if not self.guards:
            return 0
        examples = 0
        control_scores = {}
        for guard in self.guards:
            with self._interruptible():
                result = guard.scorer.score()
            control_scores[guard.control.task] = float(result.score)
            # Optuna's own constraint: the samplers steer away from infeasible regions.
            trial.set_constraint(guard.control.task, guard.violation(float(result.score)))
            examples += result.n
        trial.set_user_attr("controls", control_scores)
        return examples
