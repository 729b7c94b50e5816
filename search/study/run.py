"""The composition search: an Optuna study over the top-K screened candidates of one target.

Search space, per candidate i (ranked by screening gain): `use:<repo_id>` (include it or not) and, when
included, `lambda:<repo_id>` in [0, lambda_max]. A trial composes `theta_T + combine(lambda_i tau_i)` in
place on ONE live model per worker (the Composer; never a reload) and scores it on nested prefixes of the
search split, reporting each to the pruner (successive halving by default). The objective is the paper's
score on the search split; the held-out split is scored only after the search, for the top-N trials.

Candidate rule: those with a positive screening gain, best first, at most `top_k`; when none has a
positive gain, the `top_k` best anyway (a combination can help where no single candidate does). The
candidates are frozen into the study's user attributes when it is created, so a resumed study and every
worker joining it search the same space even if more screenings land later.

Resumability (ARCHITECTURE invariant 5): the study lives in an RDB storage (SQLite beside the taskvec DB
by default) under a deterministic name; `n_trials` is the study's total of finished trials (complete +
pruned), so rerunning the same command after a crash tops the study up to that total. Trials of dead
workers are failed by heartbeat and retried. Each completed trial is written to the leaderboard right
after it completes, and a sync pass at start and end writes any completed trial still missing.

Several workers share a study through the storage. Before a trial starts it counts the live or finished
trials numbered before it; if they already fill the quota the trial is cancelled (marked failed, never
scored), so the study never finishes more than `n_trials`.

Multi-task (`task="mrpc,rte,cola,sst2"`, see `search.study.objectives`): the same loop scores one composition on
each task's search split and combines the scores (`mean`, `normalized-mean`) or keeps them apart
(`pareto`: a multi-objective study, no pruning, since Optuna prunes single objectives only). The
ingredients are each task's own fine-tuned model (its *reference*, named or found among the registry's
screened targets) plus the best screened helpers of each reference. Pruning reports at nested prefixes
taken across all tasks at once, so every rung sees every task. Control guards (`--control TASK:DROP`) are
scored after the objective on the control's search split and fed to the sampler as Optuna constraints;
infeasible trials are recorded with their control scores and never rank as best.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.pool import NullPool

from registry.constants import home
from registry.pins import Pinned, checkpoint_dirs, resolve_target
from search.errors import SearchError
from search.scoring.prefix import NestedPrefixScorer, prefix_sizes
from search.screen.store import screened_candidates
from search.study.objectives import Control, combine, is_feasible, resolve_objective
from search.study.references import resolve_references
from search.tables import worker_id
from search.vectors.compose import open_composer

SAMPLERS = ("tpe", "random", "cmaes", "gp", "nsga2")
PRUNERS = ("sha", "hyperband")
STUDY_ATTR = "taskvec"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# States that take a place in the quota: finished, or going to finish unless their worker dies.
QUOTA_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
USE_PREFIX = "use:"
LAMBDA_PREFIX = "lambda:"
WARM_SINGLES = 4
# Multi-task warm start: every reference at one of these lambdas (FusionBench's global lambda is 0.3).
WARM_UNIFORM = (0.3, 0.5, 1.0)


@dataclass(frozen=True)
class SearchConfig:
    """What to search and how.

    Attributes:
        task: GLUE task (`mrpc`, `rte`, `cola`, `sst2`), or several comma-separated for a multi-task search.
        target: target repo id (as synced into the registry) or model folder; for a multi-task search
            usually the base itself.
        data_dir: local GLUE parquet folder; None loads from the Hub.
        top_k: at most this many screened candidates enter the search.
        n_trials: the study's total of finished (complete + pruned) trials to reach.
        timeout_s: stop this worker after this many seconds (None: no limit).
        method: combine method (`task_arithmetic`, `ties`, `dare`).
        method_options: options of the method (e.g. TIES density, DARE drop rate and seed).
        sampler: `tpe` (multivariate, grouped), `random`, `cmaes` or `gp`.
        storage: Optuna storage URL (default: `sqlite:///<TASKVEC_HOME>/optuna.db`).
        study_name: study name (default: `default_study_name(config)`).
        db_url: taskvec database URL (default: TASKVEC_DB or the SQLite file under TASKVEC_HOME).
        pruning: report nested prefixes to the pruner and stop unpromising trials early.
        pruner: `sha` (successive halving) or `hyperband`.
        seed: sampler seed (workers joining an existing study offset it by their pid).
        heldout_top_n: score this many best trials on the held-out split at the end.
        search_size: examples in the search split (default: the data module's default).
        split_seed: seed of the stratified search split.
        lambda_max: upper bound of every coefficient.
        mode: scoring mode (`rank` or `generate`).
        prefix_rungs: number of nested prefixes of the search split reported to the pruner; prefix k
            holds `ceil(n / rf**(rungs-1)) * rf**k` examples (the pruner's rungs), the last the whole split.
        reduction_factor: the pruner's reduction factor `rf` (also the ratio of consecutive prefixes).
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without heartbeat after which a running trial counts as dead.
        max_retry: how many times a dead worker's trial is retried.
        vector_cache: folder of precomputed task vectors (default: the registry's vector cache).
        objective: `score` (one task), `mean`, `normalized-mean` or `pareto` (several); None picks `score`
            for one task and `mean` for several.
        references: task -> its own fine-tuned model (repo id or folder), for a multi-task search; a task
            left out takes the one target the registry screened for it.
        controls: control guards: a composition dropping more than `max_drop` points below the target on
            a control task is infeasible.
    """

    task: str
    target: str
    data_dir: Path | None = None
    top_k: int = 16
    n_trials: int = 100
    timeout_s: float | None = None
    method: str = "task_arithmetic"
    method_options: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    storage: str | None = None
    study_name: str | None = None
    db_url: str | None = None
    pruning: bool = True
    pruner: str = "sha"
    seed: int = 0
    heldout_top_n: int = 3
    search_size: int | None = None
    split_seed: int = 0
    lambda_max: float = 1.5
    mode: str = "rank"
    prefix_rungs: int = 3
    reduction_factor: int = 3
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 2
    vector_cache: Path | None = None
    objective: str | None = None
    references: dict[str, str] = field(default_factory=dict)
    controls: tuple[Control, ...] = ()

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the objective scores, in the order given (the order pruning reports them)."""
        return tuple(t.strip() for t in self.task.split(",") if t.strip())

    @property
    def kind(self) -> str:
        """The objective kind after defaults (`score` for one task)."""
        return resolve_objective(self.objective, self.tasks)

    @property
    def multi(self) -> bool:
        return len(self.tasks) > 1

    def validate(self) -> None:
        """Check the options that need no database.

        Raises:
            SearchError: for an unknown sampler, pruner, mode, method, task or objective, or bad numbers.
        """
        from search.tasks.glue import get_task

        if not self.tasks:
            raise SearchError("give a task (--task rte) or several (--tasks mrpc,rte,cola,sst2)")
        for task in self.tasks:
            get_task(task)
        if len(set(self.tasks)) != len(self.tasks):
            raise SearchError(f"--tasks {self.task}: a task is listed twice")
        kind = self.kind
        for task in self.references:
            if task not in self.tasks:
                raise SearchError(f"--reference {task}=...: {task} is not one of the searched tasks")
        if self.references and not self.multi:
            raise SearchError("--reference names fine-tuned models for a multi-task search (--tasks ...)")
        seen = set()
        for control in self.controls:
            get_task(control.task)
            if control.task in self.tasks:
                raise SearchError(f"--control {control.task}: a control task cannot also be searched")
            if control.task in seen:
                raise SearchError(f"--control {control.task}: given twice")
            seen.add(control.task)
        if kind == "pareto" and self.sampler in ("cmaes", "gp"):
            raise SearchError("--objective pareto needs a multi-objective sampler (tpe, nsga2, random)")
        if self.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {self.sampler!r} (use {', '.join(SAMPLERS)})")
        if self.pruner not in PRUNERS:
            raise SearchError(f"unknown pruner {self.pruner!r} (use {', '.join(PRUNERS)})")
        if self.mode not in ("rank", "generate"):
            raise SearchError(f"unknown scoring mode {self.mode!r} (use rank or generate)")
        _check_method(self.method)
        if self.top_k < 1:
            raise SearchError(f"--top-k must be at least 1, got {self.top_k}")
        if self.n_trials < 1:
            raise SearchError(f"--trials must be at least 1, got {self.n_trials}")
        if not self.lambda_max > 0:
            raise SearchError(f"lambda_max must be positive, got {self.lambda_max}")
        if self.prefix_rungs < 1 or self.reduction_factor < 2:
            raise SearchError("pruning needs at least 1 rung and a reduction factor of at least 2")

    @property
    def label(self) -> str:
        """The leaderboard's `task` value: the task, or the tasks joined by commas."""
        return ",".join(self.tasks)


@dataclass(frozen=True)
class SearchSummary:
    """The state of a study after this worker stopped.

    Attributes:
        study_name: the study.
        storage: its storage URL (password hidden).
        task: the task.
        n_finished: finished trials in the study (complete + pruned).
        n_complete: complete trials.
        n_pruned: pruned trials.
        trials_here: trials this worker finished in this run.
        examples_scored: search-split examples scored over all finished trials of the study.
        best_trial: number of the best trial (None if none completed).
        best_score_search: its search score.
        best_score_heldout: its held-out score, if computed.
        target_score_search: the target's own search score.
        target_score_heldout: the target's own held-out score.
        candidates: repo ids searched over, in order.
        elapsed_s: wall time of this run.
        stopped: why this worker stopped (`done`, `timeout`).
        objective: the objective kind.
        best_scores: task -> search score of the best trial (multi-task), else None.
        n_infeasible: completed trials that failed a control guard.
        n_pareto: rows on the Pareto front (pareto objective).
    """

    study_name: str
    storage: str
    task: str
    n_finished: int
    n_complete: int
    n_pruned: int
    trials_here: int
    examples_scored: int
    best_trial: int | None
    best_score_search: float | None
    best_score_heldout: float | None
    target_score_search: float
    target_score_heldout: float | None
    candidates: tuple[str, ...]
    elapsed_s: float
    stopped: str
    objective: str = "score"
    best_scores: dict[str, float] | None = None
    n_infeasible: int = 0
    n_pareto: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_method(name: str) -> None:
    from search.vectors.methods import get_method

    try:
        get_method(name)
    except ValueError as exc:
        raise SearchError(str(exc)) from exc


def _method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's options with defaults filled in (stored with rows: DARE's seed, TIES' density)."""
    from search.vectors.methods import get_method

    return dict(get_method(name).validate(dict(options) or None))


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `8h`, `1d` -> seconds.

    Raises:
        SearchError: if the text is not a positive duration.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    scale = units.get(raw[-1:])
    number = raw[:-1] if scale else raw
    try:
        value = float(number) * (scale or 1)
    except ValueError as exc:
        raise SearchError(f"--timeout {text!r}: expected e.g. 90s, 30m, 8h") from exc
    if not value > 0:
        raise SearchError(f"--timeout {text!r}: must be positive")
    return value


def default_storage() -> str:
    """Optuna's storage when none is given: a SQLite file beside the taskvec database."""
    return f"sqlite:///{home() / 'optuna.db'}"


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (for messages and summaries)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _settings_digest(config: SearchConfig) -> str:
    knobs = {
        "options": config.method_options,
        "pruning": config.pruning,
        "pruner": config.pruner,
        "rf": config.reduction_factor,
        "rungs": config.prefix_rungs,
        "lambda_max": config.lambda_max,
        "search_size": config.search_size,
        "split_seed": config.split_seed,
        "mode": config.mode,
    }
    # Keys only present when used, so single-task studies keep the names they always had.
    if config.multi:
        knobs["objective"] = config.kind
        knobs["references"] = dict(sorted(config.references.items()))
    if config.controls:
        knobs["controls"] = [c.as_text() for c in config.controls]
    return hashlib.sha1(json.dumps(knobs, sort_keys=True, default=str).encode()).hexdigest()[:6]


def default_study_name(config: SearchConfig, *, target_revision: str | None = None) -> str:
    """A deterministic study name: the same command always names the same study.

    Args:
        config: the search.
        target_revision: the target's pinned revision (resolved from the registry when None).

    Returns:
        e.g. `rte-t5-pico-rte@1a2b3c4d-task_arithmetic-k16-tpe-9f8e7d`; a multi-task study starts with its
        tasks and objective, e.g. `mrpc+rte+cola+sst2-normalized-mean-t5-pico@...`.

    Raises:
        SearchError, RegistryError: if the target cannot be resolved.
    """
    if target_revision is None:
        target_revision = resolve_target(config.target, db_url=config.db_url).target.revision
    name = Path(str(config.target).rstrip("/")).name or "target"
    label = f"{'+'.join(config.tasks)}-{config.kind}" if config.multi else config.task
    return (
        f"{label}-{name}@{target_revision[:8]}-{config.method}-k{config.top_k}-{config.sampler}"
        f"-{_settings_digest(config)}"
    )


def make_sampler(name: str, *, seed: int, n_params: int) -> optuna.samplers.BaseSampler:
    """The sampler named on the command line.

    Control guards reach TPE, GP and NSGA-II as the trials' own constraints (`Trial.set_constraint`).

    Raises:
        SearchError: for an unknown name or a missing optional dependency.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "tpe":
        # Multivariate + grouped TPE models the conditional lambdas jointly; constant liar keeps
        # parallel workers from proposing the same point.
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=max(5, min(10, 2 * n_params)),
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError as exc:
            raise SearchError("sampler cmaes needs the `cmaes` package (pip install cmaes)") from exc
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    raise SearchError(f"unknown sampler {name!r} (use {', '.join(SAMPLERS)})")


def make_pruner(config: SearchConfig, sizes: Sequence[int]) -> optuna.pruners.BasePruner:
    """Successive halving (or Hyperband) over the nested prefix sizes; no pruning when off."""
    if not config.pruning or len(sizes) < 2:
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=sizes[0], max_resource=sizes[-1], reduction_factor=config.reduction_factor
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=sizes[0], reduction_factor=config.reduction_factor
    )


# Any fixed 64-bit key, distinct from registry.db's migration lock.
_PG_OPTUNA_INIT_LOCK = 0x7461736B4F505455


@contextlib.contextmanager
def _storage_init_lock(url: str) -> Iterator[None]:
    """Serialise Optuna's schema creation across processes (PostgreSQL advisory lock; file lock for SQLite).

    Optuna's RDBStorage creates its tables, version row and Alembic stamp without locking: two workers
    opening a fresh PostgreSQL database at the same moment collide (duplicate key in `pg_type`).
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        import fcntl

        lock_path = Path(parsed.database).expanduser().with_name(Path(parsed.database).name + ".init.lock")
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_OPTUNA_INIT_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_OPTUNA_INIT_LOCK})
                conn.commit()
    finally:
        engine.dispose()


def open_storage(config: SearchConfig) -> optuna.storages.RDBStorage:
    """The study's RDB storage, with heartbeats and retry of dead workers' trials.

    Raises:
        SearchError: if the storage URL cannot be opened (one line, password hidden).
    """
    url = config.storage or default_storage()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings(), _storage_init_lock(url):
            # Heartbeats and their retry callback are marked experimental; they are what we rely on.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=config.heartbeat_interval,
                grace_period=config.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=config.max_retry
                ),
            )
    except Exception as exc:  # sqlalchemy/driver errors differ by backend; all mean "cannot open"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SearchError(f"{redact_url(url)}: cannot open the Optuna storage ({first})") from exc


# --- the objective ------------------------------------------------------------------------------------


class _QuotaReached(Exception):
    """Raised in a trial that would exceed the study's total; the trial is marked failed, never scored."""


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


def use_param(repo_id: str) -> str:
    return f"{USE_PREFIX}{repo_id}"


def lambda_param(repo_id: str) -> str:
    return f"{LAMBDA_PREFIX}{repo_id}"


def coefficients_from_params(params: dict[str, Any], repos: Sequence[str]) -> list[float]:
    """The coefficient of each candidate (0 when not included) from a trial's parameters."""
    return [float(params.get(lambda_param(r), 0.0)) if params.get(use_param(r)) else 0.0 for r in repos]


@dataclass(frozen=True)
class GuardScorer:
    """A control guard bound to the live model: its search-split scorer and the target's own score."""

    control: Control
    scorer: Any  # search.scoring.scorer.Scorer on the control task's search split
    target_score: float


class Objective:
    """Composes in place, scores nested prefixes of every task and reports them to the pruner.

    Args:
        composer: holds the target weights and candidate vectors; `apply(coefs)` rewrites the live model.
        scorers: task -> nested-prefix scorer bound to the live model and that task's search split, in the
            order the tasks are reported (one entry for a single-task search).
        repos: candidate repo ids, in the composer's vector order.
        lambda_max: bound of every coefficient.
        n_trials: the study's quota of finished trials.
        pruning: whether to report intermediate prefixes.
        kind: objective kind (`search.study.objectives`).
        references: task -> the task's fine-tuned reference score on its search split (normalized-mean).
        guards: control guards, scored after the objective.
        gate: opened while the tagged trial scores (see `InterruptGate`); None lets Ctrl-C through always.
    """

    def __init__(
        self,
        *,
        composer,
        scorers: dict[str, NestedPrefixScorer],
        repos: Sequence[str],
        lambda_max: float,
        n_trials: int,
        pruning: bool,
        kind: str = "score",
        references: dict[str, float] | None = None,
        guards: Sequence[GuardScorer] = (),
        gate: InterruptGate | None = None,
    ) -> None:
        self.composer = composer
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
            raise _QuotaReached(f"trial {trial.number}: the study already has {self.n_trials} trials")
        trial.set_user_attr("worker", self.worker)
        # Tagged: from here an interrupt fails this trial, and `_fail_own_running` finds it.
        coefs = self.suggest(trial)
        with self._interruptible():
            self.composer.apply(coefs)
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
        scores = {t: float(m["score"]) for t, m in per_task.items()}
        if len(self.tasks) == 1:
            trial.set_user_attr("metrics", {k: float(v) for k, v in per_task[self.tasks[0]].items()})
        else:
            trial.set_user_attr(
                "metrics", {t: {k: float(v) for k, v in m.items()} for t, m in per_task.items()}
            )
            trial.set_user_attr("scores", scores)
        examples = step
        if self.guards:
            control_scores = {}
            for guard in self.guards:
                with self._interruptible():
                    result = guard.scorer.score()
                control_scores[guard.control.task] = float(result.score)
                # Optuna's own constraint: the samplers steer away from infeasible regions.
                trial.set_constraint(
                    guard.control.task,
                    guard.control.violation(score=float(result.score), target_score=guard.target_score),
                )
                examples += result.n
            trial.set_user_attr("controls", control_scores)
        trial.set_user_attr("examples_scored", examples)
        if self.kind == "pareto":
            return [scores[t] for t in self.tasks]
        return float(self.value(scores))


# --- study creation, warm start, leaderboard sync ----------------------------------------------------


def select_candidates(screenings: Sequence[dict[str, Any]], *, top_k: int) -> list[dict[str, Any]]:
    """The search's candidates: positive gains best first (at most `top_k`), else the `top_k` best.

    Args:
        screenings: screening dicts with `candidate_repo`, `gain` (and the rest of the row).
        top_k: the cap.

    Returns:
        The chosen screenings, best gain first (ties broken by repo id for determinism).
    """
    ranked = sorted(screenings, key=lambda s: (-s["gain"], s["candidate_repo"]))
    positive = [s for s in ranked if s["gain"] > 0]
    return (positive or ranked)[:top_k]


def multitask_candidates(
    references: dict[str, dict[str, Any]],
    helpers: dict[str, Sequence[dict[str, Any]]],
    *,
    top_k: int,
    skip_revisions: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """A multi-task search's ingredients: every task's reference, then helpers round-robin up to `top_k`.

    Args:
        references: task -> pinned reference `{repo_id, revision}` (the task's own fine-tuned model).
        helpers: task -> that reference's screenings (any order; positive gains only are used).
        top_k: total cap; references always enter, helpers fill the places left.
        skip_revisions: revisions that cannot be ingredients (the target itself).

    Returns:
        Candidate dicts `{repo_id, revision, best_lambda, gain, role, task}`, references first.
    """
    out: list[dict[str, Any]] = []
    seen = set(skip_revisions)
    for task, ref in references.items():
        if ref["revision"] in seen:
            continue
        seen.add(ref["revision"])
        out.append(
            {
                "repo_id": ref["repo_id"],
                "revision": ref["revision"],
                "best_lambda": 1.0,
                "gain": 0.0,
                "role": "reference",
                "task": task,
            }
        )
    queues = {
        task: [s for s in sorted(rows, key=lambda s: (-s["gain"], s["candidate_repo"])) if s["gain"] > 0]
        for task, rows in helpers.items()
    }
    while len(out) < top_k and any(queues.values()):
        for task, queue in queues.items():
            while queue and queue[0]["candidate_revision"] in seen:
                queue.pop(0)
            if not queue or len(out) >= top_k:
                continue
            s = queue.pop(0)
            seen.add(s["candidate_revision"])
            out.append(
                {
                    "repo_id": s["candidate_repo"],
                    "revision": s["candidate_revision"],
                    "best_lambda": s["best_lambda"],
                    "gain": s["gain"],
                    "role": "helper",
                    "task": task,
                }
            )
    return out


def warm_start_params(
    candidates: Sequence[dict[str, Any]], *, lambda_max: float, singles: int = WARM_SINGLES
) -> list[dict[str, Any]]:
    """Trials enqueued into a new study: the best single candidates at their screened lambda, then all
    candidates at one uniform lambda (the median of the screened ones).
    """
    repos = [c["candidate_repo"] for c in candidates]
    out = []
    for cand in candidates[:singles]:
        params: dict[str, Any] = {use_param(r): r == cand["candidate_repo"] for r in repos}
        params[lambda_param(cand["candidate_repo"])] = min(lambda_max, max(0.0, cand["best_lambda"]))
        out.append(params)
    if len(repos) > 1:
        lambdas = sorted(c["best_lambda"] for c in candidates)
        uniform = min(lambda_max, max(0.0, lambdas[len(lambdas) // 2]))
        params = {use_param(r): True for r in repos}
        params.update({lambda_param(r): uniform for r in repos})
        out.append(params)
    return out


def multitask_warm_start(
    candidates: Sequence[dict[str, Any]], *, lambda_max: float, lambdas: Sequence[float] = WARM_UNIFORM
) -> list[dict[str, Any]]:
    """A multi-task study's first trials: every reference (and no helper) at one uniform lambda each."""
    repos = [c["repo_id"] for c in candidates]
    refs = {c["repo_id"] for c in candidates if c.get("role") == "reference"} or set(repos)
    out = []
    for lam in lambdas:
        params: dict[str, Any] = {use_param(r): r in refs for r in repos}
        params.update({lambda_param(r): min(lambda_max, lam) for r in repos if r in refs})
        out.append(params)
    return out


def trial_tasks(meta: dict[str, Any]) -> list[str]:
    """The tasks a study's objective scores (old single-task studies name only `task`)."""
    return list(meta.get("tasks") or [meta["task"]])


def trial_row(trial: FrozenTrial, meta: dict[str, Any]) -> dict[str, Any]:
    """The leaderboard row of a completed trial, from the trial and the study's frozen context.

    Args:
        trial: a COMPLETE trial.
        meta: the study's `taskvec` user attribute (task, target, base, candidates, scorer, ...), with the
            target's scores this worker computed.

    Returns:
        Column values of `search.tables.LeaderboardRow` (without held-out scores).
    """
    repos = [c["repo_id"] for c in meta["candidates"]]
    coefs = coefficients_from_params(trial.params, repos)
    ingredients = [
        {"repo_id": c["repo_id"], "revision": c["revision"], "coefficient": coef}
        for c, coef in zip(meta["candidates"], coefs, strict=True)
        if coef != 0.0
    ]
    tasks = trial_tasks(meta)
    kind = meta.get("objective", "score")
    if len(tasks) == 1:
        score = float(trial.value)
        task_scores = {tasks[0]: score}
        metrics: dict[str, Any] = {"search": trial.user_attrs.get("metrics", {"score": score})}
    else:
        task_scores = {t: float(v) for t, v in trial.user_attrs["scores"].items()}
        score = combine(task_scores, kind="mean") if kind == "pareto" else float(trial.value)
        metrics = {"search": trial.user_attrs.get("metrics", {}), "target": meta.get("target_scores", {})}
    violations = trial.constraints
    control_scores = trial.user_attrs.get("controls") or {}
    constraints = {
        c["task"]: {
            "score_search": control_scores.get(c["task"]),
            "target_search": meta.get("control_targets", {}).get(c["task"], {}).get("search"),
            "target_heldout": meta.get("control_targets", {}).get(c["task"], {}).get("heldout"),
            "max_drop": c["max_drop"],
            "violation": float(violations[c["task"]]),
        }
        for c in meta.get("controls") or []
        if c["task"] in violations
    }
    return {
        "task": meta["task"],
        "study": meta["study"],
        "trial_number": trial.number,
        "state": "complete",
        "score_search": score,
        "metrics": metrics,
        "target_score_search": meta["target_score_search"],
        "target_score_heldout": meta.get("target_score_heldout"),
        "target_repo": meta["target"]["repo_id"],
        "target_revision": meta["target"]["revision"],
        "base_repo": meta["base"]["repo_id"],
        "base_revision": meta["base"]["revision"],
        "ingredients": ingredients,
        "method": meta["method"],
        "method_options": meta["method_options"],
        "scorer": meta["scorer"],
        "split_fingerprints": dict(meta["split_fingerprints"]),
        "scores": {t: {"search": s, "heldout": None} for t, s in task_scores.items()},
        "objective": kind,
        "constraints": constraints,
        "feasible": is_feasible(list(violations.values())),
        "reference_scores": meta.get("references"),
        "pareto": False,
        "examples_scored": int(trial.user_attrs.get("examples_scored", 0)),
        "worker": trial.user_attrs.get("worker", "unknown"),
        "created": trial.datetime_complete,
    }


def sync_leaderboard(study: optuna.Study, meta: dict[str, Any], *, db_url: str | None) -> int:
    """Write every completed trial missing from the leaderboard (e.g. killed between the two commits).

    Returns:
        The number of rows written.
    """
    from search.study.records import existing_trial_numbers, update_pareto, upsert_rows

    done = existing_trial_numbers(study=meta["study"], db_url=db_url)
    missing = [
        trial_row(t, meta)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.number not in done
    ]
    if missing:
        upsert_rows(missing, db_url=db_url)
    if meta.get("objective") == "pareto":
        update_pareto(study=meta["study"], db_url=db_url)
    return len(missing)


def _finished_counts(study: optuna.Study) -> tuple[int, int, int, int]:
    """(complete, pruned, running, waiting) trials of the study."""
    counts = dict.fromkeys(QUOTA_STATES, 0)
    for t in study.get_trials(deepcopy=False, states=QUOTA_STATES):
        counts[t.state] += 1
    return (
        counts[TrialState.COMPLETE],
        counts[TrialState.PRUNED],
        counts[TrialState.RUNNING],
        counts[TrialState.WAITING],
    )


def _create_or_load(
    config: SearchConfig, storage, name: str, build_meta: Callable[[], dict[str, Any]]
) -> tuple[optuna.Study, dict[str, Any], bool]:
    """Create the study (and its frozen context + warm start) or join it.

    Creation is atomic through the storage's unique study name: of two workers starting together only
    one creates and enqueues the warm start; the other joins.
    """
    directions = ["maximize"] * (len(config.tasks) if config.kind == "pareto" else 1)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name)
        created = False
    meta = study.user_attrs.get(STUDY_ATTR)
    if meta is None:
        # A new study, or one whose creator died before recording its context: (re)build it.
        meta = build_meta()
        meta["study"] = name
        study.set_user_attr(STUDY_ATTR, meta)
        if not study.trials:
            if len(trial_tasks(meta)) > 1:
                warm = multitask_warm_start(meta["candidates"], lambda_max=meta["lambda_max"])
            else:
                warm = warm_start_params(
                    [
                        {"candidate_repo": c["repo_id"], "best_lambda": c["best_lambda"]}
                        for c in meta["candidates"]
                    ],
                    lambda_max=meta["lambda_max"],
                )
            for params in warm:
                study.enqueue_trial(params, skip_if_exists=True)
    return study, meta, created


def _check_meta(meta: dict[str, Any], config: SearchConfig, target_revision: str, name: str) -> None:
    if trial_tasks(meta) != list(config.tasks) or meta["target"]["revision"] != target_revision:
        raise SearchError(
            f"study {name!r} searches {meta['task']} on {meta['target']['repo_id']}@"
            f"{meta['target']['revision'][:8]}, not this task/target; choose another --study"
        )
    if meta["method"] != config.method:
        raise SearchError(f"study {name!r} uses method {meta['method']}, not {config.method}")
    if meta.get("objective", "score") != config.kind:
        raise SearchError(
            f"study {name!r} uses objective {meta.get('objective', 'score')}, not {config.kind}"
        )
    theirs = [(c["task"], float(c["max_drop"])) for c in meta.get("controls") or []]
    ours = [(c.task, float(c.max_drop)) for c in config.controls]
    if theirs != ours:
        shown = ", ".join(f"{t}:{d:g}" for t, d in theirs) or "none"
        raise SearchError(f"study {name!r} has control guards {shown}; give the same --control options")


def _no_screenings_error(config: SearchConfig, target_repo: str) -> SearchError:
    return SearchError(
        f"no screened candidates for {config.task} on {target_repo}: run "
        f"`taskvec screen --task {config.task} --target {config.target}` first (same --data)"
    )


def _require_screenings(config: SearchConfig, resolved, name: str, storage, fingerprint: str) -> None:
    """Fail before loading any model when a new single-task study would have no candidates."""
    if config.multi:
        return  # a multi-task study's ingredients are the tasks' references, resolved with the context
    if screened_candidates(
        task=config.task,
        target_revision=resolved.target.revision,
        split_fingerprint=fingerprint,
        db_url=config.db_url,
    ):
        return
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    if existing is None or STUDY_ATTR not in existing.user_attrs:
        raise _no_screenings_error(config, resolved.target.repo_id)


def combined_fingerprint(fingerprints: dict[str, str]) -> str:
    """One fingerprint for several tasks' splits (task order matters: it is the reporting order)."""
    text = ";".join(f"{task}:{fp}" for task, fp in fingerprints.items())
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Live:
    """One worker's live search: the study and its frozen context, one model rewritten in place, scorers."""

    name: str
    study: optuna.Study
    meta: dict[str, Any]
    created: bool
    composer: Any
    repos: list[str]
    scorers: dict[str, NestedPrefixScorer]
    heldout: dict[str, Any]  # task (objective tasks and controls) -> held-out Scorer
    guards: list[GuardScorer]

    @property
    def reference_search(self) -> dict[str, float]:
        return {t: r["score_search"] for t, r in (self.meta.get("references") or {}).items()}

    @property
    def reference_heldout(self) -> dict[str, float]:
        return {t: r["score_heldout"] for t, r in (self.meta.get("references") or {}).items()}


def _score_reference(path: Path, *, search_split, heldout_split, mode: str) -> tuple[float, float]:
    """A fine-tuned reference's own (search, held-out) scores on its task's splits."""
    from search.scoring.models import load_seq2seq
    from search.scoring.scorer import Scorer

    model, tokenizer = load_seq2seq(path)
    search = float(Scorer(model, tokenizer, search_split, mode=mode).score().score)
    heldout = float(Scorer(model, tokenizer, heldout_split, mode=mode).score().score)
    return search, heldout


def _open_live(config: SearchConfig, *, create: bool = True) -> _Live:
    """Resolve the target, open (create, join or only load) the study, and build the live model and scorers.

    Raises:
        SearchError, RegistryError, ModelError, DataError: one line each.
    """
    from search.scoring.models import load_seq2seq
    from search.scoring.scorer import Scorer
    from search.tasks.data import load_split

    config.validate()
    kind = config.kind
    resolved = resolve_target(config.target, db_url=config.db_url)
    name = config.study_name or default_study_name(config, target_revision=resolved.target.revision)
    storage = open_storage(config)

    def splits(task: str) -> tuple[Any, Any]:
        search = load_split(
            task, split="search", data_dir=config.data_dir, size=config.search_size, seed=config.split_seed
        )
        return search, load_split(task, split="heldout", data_dir=config.data_dir)

    search_splits, heldout_splits = {}, {}
    for task in (*config.tasks, *(c.task for c in config.controls)):
        search_splits[task], heldout_splits[task] = splits(task)
    fingerprints = {t: search_splits[t].fingerprint for t in config.tasks}
    search_fp = fingerprints[config.task] if not config.multi else combined_fingerprint(fingerprints)
    if create:
        _require_screenings(config, resolved, name, storage, search_fp)
    model, tokenizer = load_seq2seq(resolved.target.path)
    pruning = config.pruning and kind != "pareto"
    sizes = {
        t: prefix_sizes(
            len(search_splits[t]),
            rungs=config.prefix_rungs,
            reduction_factor=config.reduction_factor,
            pruning=pruning,
        )
        for t in config.tasks
    }
    scorers = {
        t: NestedPrefixScorer(model, tokenizer, search_splits[t], sizes=sizes[t], mode=config.mode)
        for t in config.tasks
    }

    def build_meta() -> dict[str, Any]:
        first = scorers[config.tasks[0]].settings
        scorer_settings: dict[str, Any] = {
            **first,
            "split_seed": config.split_seed,
            "data": str(config.data_dir) if config.data_dir is not None else "hub",
        }
        split_fps: dict[str, Any] = {
            "search": search_fp,
            "heldout": heldout_splits[config.tasks[0]].fingerprint
            if not config.multi
            else combined_fingerprint({t: heldout_splits[t].fingerprint for t in config.tasks}),
        }
        meta: dict[str, Any] = {
            "task": config.label,
            "tasks": list(config.tasks),
            "objective": kind,
            "target": {"repo_id": resolved.target.repo_id, "revision": resolved.target.revision},
            "base": {"repo_id": resolved.base.repo_id, "revision": resolved.base.revision},
            "method": config.method,
            "method_options": _method_options(config.method, config.method_options),
            "lambda_max": config.lambda_max,
            "controls": [{"task": c.task, "max_drop": c.max_drop} for c in config.controls],
            "pruning": pruning,
            "n_trials_asked": config.n_trials,
        }
        if config.multi:
            refs = resolve_references(
                tasks=config.tasks,
                explicit=config.references,
                resolved=resolved,
                fingerprints=fingerprints,
                db_url=config.db_url,
            )
            meta["references"] = {}
            helpers = {}
            for task, ref in refs.items():
                score_search, score_heldout = _score_reference(
                    ref.path,
                    search_split=search_splits[task],
                    heldout_split=heldout_splits[task],
                    mode=config.mode,
                )
                meta["references"][task] = {
                    "repo_id": ref.repo_id,
                    "revision": ref.revision,
                    "score_search": score_search,
                    "score_heldout": score_heldout,
                }
                helpers[task] = screened_candidates(
                    task=task,
                    target_revision=ref.revision,
                    split_fingerprint=fingerprints[task],
                    db_url=config.db_url,
                )
            if kind == "normalized-mean":  # fail now, not at the first trial, on a non-positive reference
                combine(
                    {t: r["score_search"] for t, r in meta["references"].items()},
                    kind=kind,
                    references={t: r["score_search"] for t, r in meta["references"].items()},
                )
            meta["candidates"] = multitask_candidates(
                {t: {"repo_id": r.repo_id, "revision": r.revision} for t, r in refs.items()},
                helpers,
                top_k=config.top_k,
                skip_revisions=[resolved.target.revision, resolved.base.revision],
            )
            if not meta["candidates"]:
                raise SearchError(
                    f"{config.label}: no ingredient besides the target itself; name other fine-tuned models "
                    "with --reference TASK=REPO"
                )
            scorer_settings["label_words"] = {t: scorers[t].settings["label_words"] for t in config.tasks}
            scorer_settings["search_size"] = {t: len(search_splits[t]) for t in config.tasks}
            split_fps["tasks"] = {
                t: {"search": search_splits[t].fingerprint, "heldout": heldout_splits[t].fingerprint}
                for t in config.tasks
            }
        else:
            screened = screened_candidates(
                task=config.task,
                target_revision=resolved.target.revision,
                split_fingerprint=search_fp,
                db_url=config.db_url,
            )
            if not screened:
                raise _no_screenings_error(config, resolved.target.repo_id)
            meta["candidates"] = [
                {
                    "repo_id": s["candidate_repo"],
                    "revision": s["candidate_revision"],
                    "best_lambda": s["best_lambda"],
                    "gain": s["gain"],
                }
                for s in select_candidates(screened, top_k=config.top_k)
            ]
            scorer_settings["search_size"] = len(search_splits[config.task])
        if config.controls:
            split_fps["controls"] = {
                c.task: {
                    "search": search_splits[c.task].fingerprint,
                    "heldout": heldout_splits[c.task].fingerprint,
                }
                for c in config.controls
            }
        meta["scorer"] = scorer_settings
        meta["split_fingerprints"] = split_fps
        return meta

    if create:
        study, meta, created = _create_or_load(config, storage, name, build_meta)
    else:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError as exc:
            raise SearchError(f"no study named {name!r}: run the search first") from exc
        meta, created = study.user_attrs.get(STUDY_ATTR), False
        if meta is None:
            raise SearchError(f"study {name!r} has no taskvec context (was it created by `taskvec search`?)")
    _check_meta(meta, config, resolved.target.revision, name)
    if meta["split_fingerprints"]["search"] != search_fp:
        raise SearchError(
            f"study {name!r} was run on another search split (fingerprint "
            f"{meta['split_fingerprints']['search'][:12]}); use the same --data and split size"
        )

    repos = [c["repo_id"] for c in meta["candidates"]]
    pairs = [(c["repo_id"], c["revision"]) for c in meta["candidates"]]
    dirs = checkpoint_dirs(pairs, db_url=config.db_url)
    composer = open_composer(
        model,
        target=resolved.target.path,
        base=resolved.base,
        ingredients=[Pinned(r, v, d) for (r, v), d in zip(pairs, dirs, strict=True)],
        method=meta["method"],
        method_options=meta["method_options"],
        cache_dir=config.vector_cache,
    )
    heldout = {t: Scorer(model, tokenizer, split, mode=config.mode) for t, split in heldout_splits.items()}
    # The target's own scores, computed once per worker (deterministic) and stored with every row.
    composer.apply([0.0] * len(repos))
    target_scores = {
        t: {"search": float(scorers[t].full.score().score), "heldout": float(heldout[t].score().score)}
        for t in config.tasks
    }
    live = _Live(
        name=name,
        study=study,
        meta=meta,
        created=created,
        composer=composer,
        repos=repos,
        scorers=scorers,
        heldout=heldout,
        guards=[],
    )
    objective_kind = "mean" if kind == "pareto" else kind
    meta["target_scores"] = target_scores
    meta["target_score_search"] = combine(
        {t: s["search"] for t, s in target_scores.items()},
        kind=objective_kind,
        references=live.reference_search,
    )
    meta["target_score_heldout"] = combine(
        {t: s["heldout"] for t, s in target_scores.items()},
        kind=objective_kind,
        references=live.reference_heldout,
    )
    meta["control_targets"] = {}
    for control in config.controls:
        guard_scorer = Scorer(model, tokenizer, search_splits[control.task], mode=config.mode)
        target_search = float(guard_scorer.score().score)
        meta["control_targets"][control.task] = {
            "search": target_search,
            "heldout": float(heldout[control.task].score().score),
        }
        live.guards.append(GuardScorer(control=control, scorer=guard_scorer, target_score=target_search))
    return live


def run_search(config: SearchConfig, *, progress: bool = True) -> SearchSummary:
    """Run (or resume, or join) the study until it has `n_trials` finished trials or time runs out.

    Args:
        config: the search (one task, or several with a multi-task objective).
        progress: show a live progress line with the best score so far.

    Returns:
        The study's summary after this worker stopped.

    Raises:
        SearchError: bad options, no screened candidates or references, a study of another search,
            unreachable storage.
        RegistryError, ModelError, DataError: from the registry, the models or the data (one line each).
        KeyboardInterrupt: after the completed trials are safely in the leaderboard.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.leaderboard.rows import refresh_heldout
    from search.study.records import study_best, update_pareto, upsert_rows

    started = time.monotonic()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    live = _open_live(config)
    study, meta, name = live.study, live.meta, live.name
    seed = config.seed if live.created else config.seed + os.getpid() % 100_000
    study.sampler = make_sampler(config.sampler, seed=seed, n_params=len(live.repos))
    objective = Objective(
        composer=live.composer,
        scorers=live.scorers,
        repos=live.repos,
        lambda_max=meta["lambda_max"],
        n_trials=config.n_trials,
        pruning=config.pruning,
        kind=config.kind,
        references=live.reference_search,
        guards=live.guards,
        gate=InterruptGate(),
    )
    # A Pareto study scores whole splits (one step), which makes this Optuna's NopPruner.
    study.pruner = make_pruner(config, objective.steps)
    sync_leaderboard(study, meta, db_url=config.db_url)

    def on_trial_end(st: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            upsert_rows([trial_row(trial, meta)], db_url=config.db_url)
            if config.kind == "pareto":
                update_pareto(study=name, db_url=config.db_url)

    trials_here = 0
    stopped = "done"
    deadline = None if config.timeout_s is None else started + config.timeout_s
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
    )
    if progress:
        from rich.console import Console

        what = f"{len(live.repos)} candidates, prefixes {live.scorers[config.tasks[0]].sizes}"
        if config.multi:
            what = f"{len(live.repos)} ingredients over {config.label} ({config.kind})"
        if config.controls:
            what += ", controls " + ", ".join(c.as_text() for c in config.controls)
        Console(stderr=True).print(
            f"study [bold]{name}[/] ({redact_url(config.storage or default_storage())}): {what}",
            highlight=False,
        )
    try:
        with objective.gate, Progress(*columns, disable=not progress, transient=False) as bar:
            job = bar.add_task(f"search {config.label}", total=config.n_trials, best="")
            while True:
                objective.gate.check()
                complete, pruned, running, waiting = _finished_counts(study)
                if progress:
                    bar.update(
                        job, completed=min(complete + pruned, config.n_trials), best=_best_text(study, meta)
                    )
                if complete + pruned >= config.n_trials:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    stopped = "timeout"
                    break
                if complete + pruned + running >= config.n_trials and waiting == 0:
                    # Only other workers' trials are left: wait for them to finish, or to be declared
                    # dead by heartbeat and re-enqueued.
                    optuna.storages.fail_stale_trials(study)
                    fail_unbeaten_trials(study, grace_s=config.grace_period)
                    time.sleep(min(config.heartbeat_interval, 2.0))
                    continue
                study.optimize(objective, n_trials=1, catch=(_QuotaReached,), callbacks=[on_trial_end])
                trials_here += 1
            objective.gate.check()
    except KeyboardInterrupt:
        _fail_own_running(study, objective.worker)
        sync_leaderboard(study, meta, db_url=config.db_url)
        raise
    sync_leaderboard(study, meta, db_url=config.db_url)
    if config.heldout_top_n > 0:
        refresh_heldout(
            db_url=config.db_url,
            study=name,
            top_n=config.heldout_top_n,
            data_dir=config.data_dir,
            live=(live.composer, live.heldout, live.repos),
        )
    complete, pruned, _, _ = _finished_counts(study)
    best_row = study_best(study=name, db_url=config.db_url)
    examples = sum(
        int(t.user_attrs.get("examples_scored", 0)) for t in study.get_trials(deepcopy=False, states=FINISHED)
    )
    from search.study.records import query

    rows = query(db_url=config.db_url, study=name)
    return SearchSummary(
        study_name=name,
        storage=redact_url(config.storage or default_storage()),
        task=config.label,
        n_finished=complete + pruned,
        n_complete=complete,
        n_pruned=pruned,
        trials_here=trials_here,
        examples_scored=examples,
        best_trial=None if best_row is None else best_row["trial_number"],
        best_score_search=None if best_row is None else best_row["score_search"],
        best_score_heldout=None if best_row is None else best_row["score_heldout"],
        target_score_search=meta["target_score_search"],
        target_score_heldout=meta["target_score_heldout"],
        candidates=tuple(live.repos),
        elapsed_s=time.monotonic() - started,
        stopped=stopped,
        objective=config.kind,
        best_scores=None
        if best_row is None or not config.multi
        else {t: s["search"] for t, s in best_row["scores"].items()},
        n_infeasible=sum(1 for r in rows if not r["feasible"]),
        n_pareto=sum(1 for r in rows if r["pareto"]),
    )


def fail_unbeaten_trials(study: optuna.Study, *, grace_s: float) -> list[int]:
    """Fail (and retry, as for a stale heartbeat) RUNNING trials that never beat and started > grace ago.

    Optuna's `fail_stale_trials` skips a trial with no heartbeat at all, so a worker killed between
    creating a trial and its first heartbeat left it RUNNING for ever, and a resuming worker waited on it
    for ever. A live worker beats within moments of creating its trial.

    Returns:
        The numbers of the trials failed.
    """
    from optuna.storages._rdb.models import TrialHeartbeatModel, TrialModel
    from sqlalchemy import select

    storage = study._storage
    rdb = getattr(storage, "_backend", storage)  # Optuna wraps its RDB storage in a cache
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return []
    trials, beats = TrialModel.__table__.c, TrialHeartbeatModel.__table__.c
    with rdb.engine.connect() as conn:
        rows = conn.execute(
            select(trials.trial_id, trials.datetime_start)
            .select_from(
                TrialModel.__table__.outerjoin(
                    TrialHeartbeatModel.__table__, beats.trial_id == trials.trial_id
                )
            )
            .where(
                trials.study_id == study._study_id,
                trials.state == TrialState.RUNNING.name,
                beats.trial_heartbeat_id.is_(None),
            )
        ).all()
    now = datetime.now()  # Optuna stamps datetime_start with the naive local time
    callback = storage.get_heartbeat_stale_trial_callback()
    failed = []
    for trial_id, started in rows:
        if started is None or (now - started).total_seconds() <= grace_s:
            continue
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker finished or failed it first
        trial = storage.get_trial(trial_id)
        if callback is not None:
            callback(study, trial)
        failed.append(trial.number)
    return failed


def _fail_own_running(study: optuna.Study, worker: str) -> None:
    """Mark this worker's interrupted trial failed now, rather than leaving it for the heartbeat to find."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == worker:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # finished meanwhile
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def trial_value(trial: FrozenTrial) -> float:
    """A finished trial's one number: its value, or the mean of a multi-objective trial's values."""
    values = trial.values or []
    return float(values[0]) if len(values) == 1 else float(sum(values) / max(1, len(values)))


def trial_feasible(trial: FrozenTrial) -> bool:
    """Whether every constraint of the trial (taskvec's control guards) holds."""
    return is_feasible(list(trial.constraints.values()))


def _best_text(study: optuna.Study, meta: dict[str, Any]) -> str:
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if trial_feasible(t)
    ]
    if not complete:
        return f"target {meta['target_score_search']:.2f}"
    best = max(complete, key=trial_value)
    what = "best mean" if meta.get("objective") == "pareto" else "best"
    return f"{what} {trial_value(best):.2f} (trial {best.number}) vs target {meta['target_score_search']:.2f}"


# --- FusionBench's baseline ------------------------------------------------------------------------------

BASELINE_LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class BaselineResult:
    """Task arithmetic with one global lambda over all of a study's ingredients (FusionBench's baseline).

    The lambda is chosen on the search split, as the study's compositions are; held-out is only reported.

    Attributes:
        study: the study whose ingredients were used.
        ingredients: their repo ids.
        lambda_: the chosen global coefficient.
        grid: lambda -> objective on the search split.
        scores: task -> {"search", "heldout"} at the chosen lambda.
        objective_search: the objective at the chosen lambda on the search split.
        objective_heldout: the same objective on the held-out split.
        feasible: whether every control guard held on the search split.
    """

    study: str
    ingredients: tuple[str, ...]
    lambda_: float
    grid: dict[float, float]
    scores: dict[str, dict[str, float]]
    objective_search: float
    objective_heldout: float
    feasible: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def global_lambda_baseline(
    config: SearchConfig, *, lambdas: Sequence[float] = BASELINE_LAMBDAS
) -> BaselineResult:
    """Score `theta_T + lambda * sum_i tau_i` over the study's ingredients for each lambda of a grid.

    Args:
        config: the search whose study exists (same options as the `run_search` that made it).
        lambdas: the grid; the best on the search split (among those passing the guards, if any) is kept.

    Returns:
        The chosen lambda with its per-task search and held-out scores.

    Raises:
        SearchError: if the study does not exist or the grid is empty.
    """
    if not lambdas:
        raise SearchError("the baseline needs at least one lambda")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    live = _open_live(config, create=False)
    kind = "mean" if config.kind == "pareto" else config.kind
    grid: dict[float, float] = {}
    per_lambda: dict[float, tuple[dict[str, float], bool]] = {}
    for lam in lambdas:
        live.composer.apply([float(lam)] * len(live.repos))
        scores = {t: float(s.full.score().score) for t, s in live.scorers.items()}
        ok = all(
            g.control.violation(score=float(g.scorer.score().score), target_score=g.target_score) <= 0
            for g in live.guards
        )
        grid[float(lam)] = combine(scores, kind=kind, references=live.reference_search)
        per_lambda[float(lam)] = (scores, ok)
    feasible = [lam for lam in grid if per_lambda[lam][1]] or list(grid)
    best = max(feasible, key=lambda lam: (grid[lam], -lam))
    live.composer.apply([best] * len(live.repos))
    heldout = {t: float(live.heldout[t].score().score) for t in config.tasks}
    return BaselineResult(
        study=live.name,
        ingredients=tuple(live.repos),
        lambda_=best,
        grid=grid,
        scores={t: {"search": per_lambda[best][0][t], "heldout": heldout[t]} for t in config.tasks},
        objective_search=grid[best],
        objective_heldout=combine(heldout, kind=kind, references=live.reference_heldout),
        feasible=per_lambda[best][1],
    )
