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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.pool import NullPool

from registry.constants import home
from registry.errors import SearchError

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("sha", "hyperband")
STUDY_ATTR = "taskvec"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# States that take a place in the quota: finished, or going to finish unless their worker dies.
QUOTA_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
USE_PREFIX = "use:"
LAMBDA_PREFIX = "lambda:"
WARM_SINGLES = 4


def worker_id() -> str:
    """`hostname:pid` of this process, stored with every row it writes."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class SearchConfig:
    """What to search and how.

    Attributes:
        task: GLUE task (`mrpc`, `rte`, `cola`, `sst2`).
        target: target repo id (as synced into the registry) or model folder.
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

    def validate(self) -> None:
        """Check the options that need no database.

        Raises:
            SearchError: for an unknown sampler, pruner, mode or method, or bad numbers.
        """
        from search.glue import get_task

        get_task(self.task)
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_method(name: str) -> None:
    from search.merge import get_method

    try:
        get_method(name)
    except ValueError as exc:
        raise SearchError(str(exc)) from exc


def _method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's options with defaults filled in (stored with rows: DARE's seed, TIES' density)."""
    from search.merge import get_method

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
    return hashlib.sha1(json.dumps(knobs, sort_keys=True, default=str).encode()).hexdigest()[:6]


def default_study_name(config: SearchConfig, *, target_revision: str | None = None) -> str:
    """A deterministic study name: the same command always names the same study.

    Args:
        config: the search.
        target_revision: the target's pinned revision (resolved from the registry when None).

    Returns:
        e.g. `rte-t5-pico-rte@1a2b3c4d-task_arithmetic-k16-tpe-9f8e7d`.

    Raises:
        SearchError, RegistryError: if the target cannot be resolved.
    """
    if target_revision is None:
        from search.resolve import resolve_target

        target_revision = resolve_target(config.target, db_url=config.db_url).target.revision
    name = Path(str(config.target).rstrip("/")).name or "target"
    return (
        f"{config.task}-{name}@{target_revision[:8]}-{config.method}-k{config.top_k}-{config.sampler}"
        f"-{_settings_digest(config)}"
    )


def prefix_sizes(n_examples: int, *, rungs: int, reduction_factor: int, pruning: bool) -> list[int]:
    """Nested prefix lengths reported to the pruner (just the whole split without pruning).

    The sizes are the successive-halving rungs `s0 * rf**k` (s0 = ceil(n / rf**(rungs-1))), so every
    intermediate report lands exactly on a rung; the last prefix is the whole split.

    Args:
        n_examples: search split size.
        rungs: number of prefixes.
        reduction_factor: ratio between consecutive prefixes.
        pruning: whether intermediate prefixes are scored at all.

    Returns:
        Strictly increasing sizes ending with `n_examples`.
    """
    if not pruning or rungs <= 1:
        return [n_examples]
    s0 = max(1, math.ceil(n_examples / reduction_factor ** (rungs - 1)))
    sizes: list[int] = []
    for k in range(rungs):
        n = min(n_examples, s0 * reduction_factor**k)
        if not sizes or n > sizes[-1]:
            sizes.append(n)
    if sizes[-1] != n_examples:
        sizes.append(n_examples)
    return sizes


class NestedPrefixScorer:
    """Scores nested prefixes of a split's fixed order, each example once per pass.

    Prefix k's score is computed from the predictions of chunks 0..k (the examples of prefix k-1 are not
    scored again), so a trial that runs to the end costs one pass over the split whatever the number of
    rungs, and a pruned trial costs only the prefix it reached. The prefixes are those of
    `Scorer(...).score(prefix=n)` (same seeded order), so the scores are identical.

    Args:
        model: the live model.
        tokenizer: its tokenizer.
        split: the search split.
        sizes: increasing prefix lengths (last = len(split)).
        mode: scoring mode.
        order_seed: seed of the fixed order.
    """

    def __init__(
        self, model, tokenizer, split, *, sizes: Sequence[int], mode: str = "rank", order_seed: int = 0
    ) -> None:
        from search.data import Split
        from search.glue import get_task
        from search.scoring import Scorer

        self.full = Scorer(model, tokenizer, split, mode=mode, order_seed=order_seed)
        self.spec = get_task(split.task)
        self.sizes = [int(n) for n in sizes]
        self.chunks = []
        prev = 0
        for n in self.sizes:
            rows = self.full.order[prev:n]
            digest = hashlib.sha256(f"{split.fingerprint}:{order_seed}:{prev}:{n}".encode()).hexdigest()
            chunk = Split(
                task=split.task,
                name=split.name,
                examples=split.examples.iloc[rows].reset_index(drop=True),
                fingerprint=digest,
            )
            self.chunks.append(Scorer(model, tokenizer, chunk, mode=mode, order_seed=order_seed))
            prev = n

    @property
    def settings(self) -> dict[str, Any]:
        return self.full.settings

    def iter_scores(self) -> Iterator[tuple[int, dict[str, float]]]:
        """Yield `(n, metrics)` for each prefix, scoring only the examples new to it."""
        preds: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for n, chunk in zip(self.sizes, self.chunks, strict=True):
            result = chunk.score()
            preds.append(result.predictions)
            labels.append(result.labels)
            yield n, self.spec.compute_metrics(np.concatenate(labels), np.concatenate(preds))


def make_sampler(name: str, *, seed: int, n_params: int) -> optuna.samplers.BaseSampler:
    """The sampler named on the command line.

    Raises:
        SearchError: for an unknown name or a missing optional dependency.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
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


def use_param(repo_id: str) -> str:
    return f"{USE_PREFIX}{repo_id}"


def lambda_param(repo_id: str) -> str:
    return f"{LAMBDA_PREFIX}{repo_id}"


def coefficients_from_params(params: dict[str, Any], repos: Sequence[str]) -> list[float]:
    """The coefficient of each candidate (0 when not included) from a trial's parameters."""
    return [float(params.get(lambda_param(r), 0.0)) if params.get(use_param(r)) else 0.0 for r in repos]


class Objective:
    """Composes in place, scores nested prefixes and reports them to the pruner.

    Args:
        composer: holds the target weights and candidate vectors; `apply(coefs)` rewrites the live model.
        scorer: nested-prefix scorer bound to the live model and the search split.
        repos: candidate repo ids, in the composer's vector order.
        lambda_max: bound of every coefficient.
        n_trials: the study's quota of finished trials.
        pruning: whether to report intermediate prefixes.
    """

    def __init__(
        self,
        *,
        composer,
        scorer: NestedPrefixScorer,
        repos: Sequence[str],
        lambda_max: float,
        n_trials: int,
        pruning: bool,
    ) -> None:
        self.composer = composer
        self.scorer = scorer
        self.repos = list(repos)
        self.lambda_max = lambda_max
        self.n_trials = n_trials
        self.pruning = pruning
        self.worker = worker_id()

    def suggest(self, trial: optuna.Trial) -> list[float]:
        coefs = []
        for repo in self.repos:
            use = trial.suggest_categorical(use_param(repo), [False, True])
            coefs.append(trial.suggest_float(lambda_param(repo), 0.0, self.lambda_max) if use else 0.0)
        return coefs

    def __call__(self, trial: optuna.Trial) -> float:
        ahead = [
            t for t in trial.study.get_trials(deepcopy=False, states=QUOTA_STATES) if t.number < trial.number
        ]
        if len(ahead) >= self.n_trials:
            raise _QuotaReached(f"trial {trial.number}: the study already has {self.n_trials} trials")
        trial.set_user_attr("worker", self.worker)
        self.composer.apply(self.suggest(trial))
        metrics: dict[str, float] = {}
        last = self.scorer.sizes[-1]
        for n, metrics in self.scorer.iter_scores():
            # Each prefix adds only its new examples: a trial stopped at prefix n scored n examples.
            trial.report(metrics["score"], n)
            if self.pruning and n < last and trial.should_prune():
                trial.set_user_attr("examples_scored", n)
                raise optuna.TrialPruned(f"score {metrics['score']:.2f} on {n} examples")
        trial.set_user_attr("examples_scored", last)
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        return float(metrics["score"])


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


def trial_row(trial: FrozenTrial, meta: dict[str, Any]) -> dict[str, Any]:
    """The leaderboard row of a completed trial, from the trial and the study's frozen context.

    Args:
        trial: a COMPLETE trial.
        meta: the study's `taskvec` user attribute (task, target, base, candidates, scorer, ...).

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
    score = float(trial.value)
    task = meta["task"]
    return {
        "task": task,
        "study": meta["study"],
        "trial_number": trial.number,
        "state": "complete",
        "score_search": score,
        "metrics": {"search": trial.user_attrs.get("metrics", {"score": score})},
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
        "scores": {task: {"search": score, "heldout": None}},
        "objective": "score",
        "constraints": {},
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
    from search.leaderboard import existing_trial_numbers, upsert_rows

    done = existing_trial_numbers(study=meta["study"], db_url=db_url)
    missing = [
        trial_row(t, meta)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.number not in done
    ]
    if missing:
        upsert_rows(missing, db_url=db_url)
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
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
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
            for params in warm_start_params(
                [
                    {"candidate_repo": c["repo_id"], "best_lambda": c["best_lambda"]}
                    for c in meta["candidates"]
                ],
                lambda_max=meta["lambda_max"],
            ):
                study.enqueue_trial(params, skip_if_exists=True)
    return study, meta, created


def _check_meta(meta: dict[str, Any], config: SearchConfig, target_revision: str, name: str) -> None:
    if meta["task"] != config.task or meta["target"]["revision"] != target_revision:
        raise SearchError(
            f"study {name!r} searches {meta['task']} on {meta['target']['repo_id']}@"
            f"{meta['target']['revision'][:8]}, not this task/target; choose another --study"
        )
    if meta["method"] != config.method:
        raise SearchError(f"study {name!r} uses method {meta['method']}, not {config.method}")


def _no_screenings_error(config: SearchConfig, target_repo: str) -> SearchError:
    return SearchError(
        f"no screened candidates for {config.task} on {target_repo}: run "
        f"`taskvec screen --task {config.task} --target {config.target}` first (same --data)"
    )


def _require_screenings(config: SearchConfig, resolved, name: str, storage, fingerprint: str) -> None:
    """Fail before loading any model when a new study would have no candidates."""
    from search.resolve import screened_candidates

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


def run_search(config: SearchConfig, *, progress: bool = True) -> SearchSummary:
    """Run (or resume, or join) the study until it has `n_trials` finished trials or time runs out.

    Args:
        config: the search.
        progress: show a live progress line with the best score so far.

    Returns:
        The study's summary after this worker stopped.

    Raises:
        SearchError: bad options, no screened candidates, a study of another search, unreachable storage.
        RegistryError, ModelError, DataError: from the registry, the models or the data (one line each).
        KeyboardInterrupt: after the completed trials are safely in the leaderboard.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.data import load_split
    from search.leaderboard import refresh_heldout, study_best
    from search.modeling import load_seq2seq
    from search.resolve import candidate_dirs, load_vectors, resolve_target, screened_candidates
    from search.scoring import Scorer
    from search.taskvector import Composer

    started = time.monotonic()
    config.validate()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    resolved = resolve_target(config.target, db_url=config.db_url)
    name = config.study_name or default_study_name(config, target_revision=resolved.target.revision)
    storage = open_storage(config)

    search_split = load_split(
        config.task, split="search", data_dir=config.data_dir, size=config.search_size, seed=config.split_seed
    )
    heldout_split = load_split(config.task, split="heldout", data_dir=config.data_dir)
    _require_screenings(config, resolved, name, storage, search_split.fingerprint)
    model, tokenizer = load_seq2seq(resolved.target.path)
    sizes = prefix_sizes(
        len(search_split),
        rungs=config.prefix_rungs,
        reduction_factor=config.reduction_factor,
        pruning=config.pruning,
    )
    scorer = NestedPrefixScorer(model, tokenizer, search_split, sizes=sizes, mode=config.mode)

    def build_meta() -> dict[str, Any]:
        screened = screened_candidates(
            task=config.task,
            target_revision=resolved.target.revision,
            split_fingerprint=search_split.fingerprint,
            db_url=config.db_url,
        )
        if not screened:
            raise _no_screenings_error(config, resolved.target.repo_id)
        chosen = select_candidates(screened, top_k=config.top_k)
        return {
            "task": config.task,
            "target": {"repo_id": resolved.target.repo_id, "revision": resolved.target.revision},
            "base": {"repo_id": resolved.base.repo_id, "revision": resolved.base.revision},
            "candidates": [
                {
                    "repo_id": s["candidate_repo"],
                    "revision": s["candidate_revision"],
                    "best_lambda": s["best_lambda"],
                    "gain": s["gain"],
                }
                for s in chosen
            ],
            "method": config.method,
            "method_options": _method_options(config.method, config.method_options),
            "lambda_max": config.lambda_max,
            "scorer": {
                **scorer.settings,
                "search_size": len(search_split),
                "split_seed": config.split_seed,
                "data": str(config.data_dir) if config.data_dir is not None else "hub",
            },
            "split_fingerprints": {"search": search_split.fingerprint, "heldout": heldout_split.fingerprint},
            "pruning": config.pruning,
            "n_trials_asked": config.n_trials,
        }

    study, meta, created = _create_or_load(config, storage, name, build_meta)
    _check_meta(meta, config, resolved.target.revision, name)
    if meta["split_fingerprints"]["search"] != search_split.fingerprint:
        raise SearchError(
            f"study {name!r} was run on another search split (fingerprint "
            f"{meta['split_fingerprints']['search'][:12]}); use the same --data and split size"
        )
    if not created:
        study.sampler = make_sampler(
            config.sampler, seed=config.seed + os.getpid() % 100_000, n_params=len(meta["candidates"])
        )
    else:
        study.sampler = make_sampler(config.sampler, seed=config.seed, n_params=len(meta["candidates"]))

    repos = [c["repo_id"] for c in meta["candidates"]]
    dirs = candidate_dirs(meta["candidates"], db_url=config.db_url)
    vectors = load_vectors(
        base_dir=resolved.base.path,
        base_revision=resolved.base.revision,
        candidates=[(d, c["revision"]) for d, c in zip(dirs, meta["candidates"], strict=True)],
        cache_dir=config.vector_cache,
    )
    composer = Composer(
        model,
        target=resolved.target.path,
        vectors=vectors,
        method=meta["method"],
        method_options=meta["method_options"],
    )
    # The target's own scores, computed once per worker (deterministic) and stored with every row.
    composer.apply([0.0] * len(repos))
    meta["target_score_search"] = float(scorer.full.score().score)
    heldout_scorer = Scorer(model, tokenizer, heldout_split, mode=config.mode)
    meta["target_score_heldout"] = float(heldout_scorer.score().score)

    study.pruner = make_pruner(config, sizes)
    objective = Objective(
        composer=composer,
        scorer=scorer,
        repos=repos,
        lambda_max=meta["lambda_max"],
        n_trials=config.n_trials,
        pruning=config.pruning,
    )
    sync_leaderboard(study, meta, db_url=config.db_url)

    from search.leaderboard import upsert_rows

    def on_trial_end(st: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            upsert_rows([trial_row(trial, meta)], db_url=config.db_url)

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

        Console(stderr=True).print(
            f"study [bold]{name}[/] ({redact_url(config.storage or default_storage())}): "
            f"{len(repos)} candidates, prefixes {sizes}",
            highlight=False,
        )
    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            job = bar.add_task(f"search {config.task}", total=config.n_trials, best="")
            while True:
                complete, pruned, running, waiting = _finished_counts(study)
                if progress:
                    best = _best_text(study, meta)
                    bar.update(job, completed=min(complete + pruned, config.n_trials), best=best)
                if complete + pruned >= config.n_trials:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    stopped = "timeout"
                    break
                if complete + pruned + running >= config.n_trials and waiting == 0:
                    # Only other workers' trials are left: wait for them to finish, or to be declared
                    # dead by heartbeat and re-enqueued.
                    optuna.storages.fail_stale_trials(study)
                    time.sleep(min(config.heartbeat_interval, 2.0))
                    continue
                study.optimize(objective, n_trials=1, catch=(_QuotaReached,), callbacks=[on_trial_end])
                trials_here += 1
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
            live=(composer, heldout_scorer, repos),
        )
    complete, pruned, _, _ = _finished_counts(study)
    best_row = study_best(study=name, db_url=config.db_url)
    examples = sum(
        int(t.user_attrs.get("examples_scored", 0)) for t in study.get_trials(deepcopy=False, states=FINISHED)
    )
    return SearchSummary(
        study_name=name,
        storage=redact_url(config.storage or default_storage()),
        task=config.task,
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
        candidates=tuple(repos),
        elapsed_s=time.monotonic() - started,
        stopped=stopped,
    )


def _fail_own_running(study: optuna.Study, worker: str) -> None:
    """Mark this worker's interrupted trial failed now, rather than leaving it for the heartbeat to find."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == worker:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # finished meanwhile
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)


def _best_text(study: optuna.Study, meta: dict[str, Any]) -> str:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return f"target {meta['target_score_search']:.2f}"
    best = max(complete, key=lambda t: t.value)
    return f"best {best.value:.2f} (trial {best.number}) vs target {meta['target_score_search']:.2f}"
