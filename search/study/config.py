"""What a search is asked to do (`SearchConfig`), what it reports (`SearchSummary`), and its study's name.

The name is deterministic (the same command always names the same study, so rerunning it resumes), and
must never change for a given command: its settings digest keeps exactly the keys it always had, and a key
added since (a non-zero `--seed`) enters only when set, so every name given before still names its study.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from registry.pins import resolve_target
from search.errors import SearchError
from search.scoring.device import Placement, resolve
from search.study.objectives import Control, resolve_objective
from search.tasks.data import SEARCH_SOURCES
from search.tasks.glue import get_task
from search.vectors.composer import check_coefficients
from search.vectors.methods import get_method

SAMPLERS = ("tpe", "random", "cmaes", "gp", "nsga2")
PRUNERS = ("sha", "hyperband")
MODES = ("rank", "generate")


@dataclass(frozen=True)
class SearchConfig:
    """What to search and how."""

    task: str
    """GLUE task (`mrpc`, `rte`, `cola`, `sst2`), or several comma-separated for a multi-task search."""
    target: str
    """Target repo id (as synced into the registry) or model folder; for several tasks usually the base."""
    data_dir: Path | None = None
    """Local GLUE parquet folder; None: the one the target's screenings were made on, else the Hub."""
    top_k: int = 16
    """At most this many screened candidates enter the search."""
    min_gain: float = 0.0
    """A screened candidate enters when its gain on the search split is above this (points); when none is,
    the `top_k` best enter anyway."""
    n_trials: int = 100
    """The study's total of finished (complete + pruned) trials to reach."""
    timeout_s: float | None = None
    """Stop this worker after this many seconds (None: no limit)."""
    method: str = "task_arithmetic"
    """Combine method (`task_arithmetic`, `ties`, `dare`)."""
    method_options: dict[str, Any] = field(default_factory=dict)
    """Options of the method (e.g. TIES density, DARE drop rate and seed)."""
    sampler: str = "tpe"
    """`tpe` (multivariate, grouped), `random`, `cmaes`, `gp` or `nsga2`."""
    storage: str | None = None
    """Optuna storage URL (default: `TASKVEC_STORAGE`, else `sqlite:///<TASKVEC_HOME>/optuna.db`)."""
    study_name: str | None = None
    """Study name (default: `default_study_name(config)`)."""
    db_url: str | None = None
    """taskvec database URL (default: TASKVEC_DB or the SQLite file under TASKVEC_HOME)."""
    pruning: bool = True
    """Report nested prefixes to the pruner and stop unpromising trials early."""
    pruner: str = "sha"
    """`sha` (successive halving) or `hyperband`."""
    seed: int = 0
    """Sampler seed (workers joining an existing study offset it by their pid); part of the study's name."""
    heldout_top_n: int = 3
    """Score this many best trials on the held-out split at the end."""
    baselines: bool = True
    """When the study is finished, score the obvious alternatives beside its best on both splits (target,
    best single, add-all, global lambda; `search.study.baselines`) and store them; needs held-out scoring."""
    search_size: int | None = None
    """Examples in the search split (default: the data module's default)."""
    split_seed: int = 0
    """Seed of the stratified search split."""
    search_from: str = "train"
    """Carve the search split from `train` (held-out: validation) or from one stratified half of
    `validation` (held-out: the other half), for a target that may have trained on all of train."""
    lambda_max: float = 1.5
    """Upper bound of every coefficient."""
    mode: str = "rank"
    """Scoring mode (`rank` or `generate`)."""
    prefix_rungs: int = 3
    """Nested prefixes of the search split reported to the pruner; prefix k holds
    `ceil(n / rf**(rungs-1)) * rf**k` examples (the pruner's rungs), the last the whole split."""
    reduction_factor: int = 3
    """The pruner's reduction factor `rf` (also the ratio of consecutive prefixes)."""
    heartbeat_interval: int = 10
    """Seconds between a running trial's heartbeats."""
    grace_period: int = 30
    """Seconds without heartbeat after which a running trial counts as dead."""
    max_retry: int = 2
    """How many times a dead worker's trial is retried."""
    vector_cache: Path | None = None
    """Folder of precomputed task vectors (default: the registry's vector cache)."""
    objective: str | None = None
    """`score` (one task), `mean`, `normalized-mean` or `pareto` (several); None picks `score` for one
    task and `mean` for several."""
    references: dict[str, str] = field(default_factory=dict)
    """Task -> its own fine-tuned model (repo id or folder), for several tasks; a task left out takes the
    one target the registry screened for it. A one-task study's reference is the target itself."""
    controls: tuple[Control, ...] = ()
    """Control guards: a composition dropping more than `max_drop` points below the target on a control
    task is infeasible."""
    surrogate: bool = False
    """Propose trials with the screening-informed surrogate (`search.study.surrogate`; one-task studies).
    Off by default: on the pico zoo (`benchmarks/surrogate_eval.py`) it reached a long run's best with 1.1x
    to 5.9x fewer exact forwards, but its best's held-out score was lower on SST-2 (README)."""
    device: str | None = None
    """Where this worker scores: `auto`, `cpu`, `cuda`, `cuda:N`, `mps` (None: `TASKVEC_DEVICE`, else auto).
    Its type (not its index) is part of the study's identity."""
    dtype: str = "auto"
    """Scoring precision: `auto` (bf16 autocast on CUDA, fp32 elsewhere), `fp32`, `bf16`, `fp16`; part of
    the study's identity."""

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
        """Several tasks (only the study's name and the `--reference` option depend on it)."""
        return len(self.tasks) > 1

    @property
    def label(self) -> str:
        """The leaderboard's `task` value: the task, or the tasks joined by commas."""
        return ",".join(self.tasks)

    @property
    def placement(self) -> Placement:
        """`device` and `dtype` resolved on this machine.

        Raises:
            SearchError: a device that is not there, or a dtype it cannot run.
        """
        return resolve(self.device, self.dtype)

    def validate(self) -> None:
        """Check the options that need no database.

        Raises:
            SearchError: for an unknown sampler, pruner, mode, method, task or objective, or bad numbers.
        """
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
        self._validate_controls()
        if kind == "pareto" and self.sampler in ("cmaes", "gp"):
            raise SearchError("--objective pareto needs a multi-objective sampler (tpe, nsga2, random)")
        if self.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {self.sampler!r} (use {', '.join(SAMPLERS)})")
        if self.pruner not in PRUNERS:
            raise SearchError(f"unknown pruner {self.pruner!r} (use {', '.join(PRUNERS)})")
        if self.search_from not in SEARCH_SOURCES:
            raise SearchError(
                f"unknown --search-from {self.search_from!r} (use {' or '.join(SEARCH_SOURCES)})"
            )
        if self.mode not in MODES:
            raise SearchError(f"unknown scoring mode {self.mode!r} (use rank or generate)")
        _check_method(self.method)
        # Fail before any model loads (or a study is created) on options the method would refuse.
        filled_method_options(self.method, self.method_options)
        if self.top_k < 1:
            raise SearchError(f"--top-k must be at least 1, got {self.top_k}")
        if not math.isfinite(self.min_gain):
            raise SearchError(f"--min-gain must be a finite number of points, got {self.min_gain}")
        if self.n_trials < 1:
            raise SearchError(f"--trials must be at least 1, got {self.n_trials}")
        if not self.lambda_max > 0:
            raise SearchError(f"lambda_max must be positive, got {self.lambda_max}")
        check_coefficients([self.lambda_max], what="lambda_max")
        if self.prefix_rungs < 1 or self.reduction_factor < 2:
            raise SearchError("pruning needs at least 1 rung and a reduction factor of at least 2")
        resolve(self.device, self.dtype)  # an unusable --device or --dtype fails here, before any work

    def _validate_controls(self) -> None:
        seen = set()
        for control in self.controls:
            get_task(control.task)
            if control.task in self.tasks:
                raise SearchError(f"--control {control.task}: a control task cannot also be searched")
            if control.task in seen:
                raise SearchError(f"--control {control.task}: given twice")
            seen.add(control.task)


@dataclass(frozen=True)
class SearchSummary:
    """The state of a study after this worker stopped.

    Attributes:
        study_name: the study.
        storage: its storage URL (password hidden).
        task: the task (several joined by commas).
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
        best_scores: task -> search score of the best trial (several tasks), else None.
        n_infeasible: completed trials that failed a control guard.
        n_pareto: rows on the Pareto front (pareto objective).
        best_gain_ci: the best row's held-out gain over the target with its paired bootstrap interval
            (its `gain_ci`), None before held-out scoring.
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
    best_gain_ci: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_record(config: SearchConfig) -> dict[str, Any]:
    """The resolved search as JSON-ready data (stored with its study: `taskvec leaderboard --config`)."""
    out = asdict(config)
    out["controls"] = [c.as_text() for c in config.controls]
    # As resolved here, by type (a worker's GPU index is its own): the file reruns into the same study.
    placement = config.placement
    out["device"], out["dtype"] = placement.device_type, placement.dtype_name
    for key in ("data_dir", "vector_cache"):
        out[key] = None if out[key] is None else str(out[key])
    return json.loads(json.dumps(out, default=str))


def _check_method(name: str) -> None:
    try:
        get_method(name)
    except ValueError as exc:
        raise SearchError(str(exc)) from exc


def filled_method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's options with defaults filled in (stored with rows: DARE's seed, TIES' density)."""
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
    if config.search_from != "train":  # another split is another study, even under the same command
        knobs["search_from"] = config.search_from
    if config.seed != 0:  # another sampler seed proposes other trials: another study (seed 0 keeps old names)
        knobs["seed"] = config.seed
    if config.surrogate:  # it proposes other trials: another study (off keeps the names given before)
        knobs["surrogate"] = True
    # Scores on another device type or in another precision differ (bf16 flips near-tie predictions): a
    # study scored on cpu-fp32 (the only kind before, so its names stay) is not joined by a cuda-bf16 run.
    placement = config.placement
    if placement.device_type != "cpu":
        knobs["device"] = placement.device_type
    if placement.autocast is not None:
        knobs["dtype"] = placement.dtype_name
    return hashlib.sha1(json.dumps(knobs, sort_keys=True, default=str).encode()).hexdigest()[:6]


def default_study_name(
    config: SearchConfig, *, target_revision: str | None = None, n_candidates: int | None = None
) -> str:
    """A deterministic study name: the same command always names the same study.

    Args:
        config: the search.
        target_revision: the target's pinned revision (resolved from the registry when None).
        n_candidates: how many candidates the rule chose (`k<n>`); None names `--top-k`. The chosen are
            always the first n of a fixed order of the screenings, so n says which they are.

    Returns:
        e.g. `rte-t5-pico-rte@1a2b3c4d-task_arithmetic-k16-tpe-9f8e7d`; a multi-task study starts with its
        tasks and objective, e.g. `mrpc+rte+cola+sst2-normalized-mean-t5-pico@...`.

    Raises:
        SearchError, RegistryError: if the target cannot be resolved.
    """
    if target_revision is None:
        target_revision = resolve_target(config.target, db_url=config.db_url).target.revision
    name = Path(str(config.target).rstrip("/")).name or "target"
    # A one-task study is named by its task alone, as it always was.
    label = f"{'+'.join(config.tasks)}-{config.kind}" if config.multi else config.task
    return (
        f"{label}-{name}@{target_revision[:8]}-{config.method}-k{n_candidates or config.top_k}-{config.sampler}"
        f"-{_settings_digest(config)}"
    )
