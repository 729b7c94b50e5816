"""How trials are proposed (the sampler) and stopped early (the pruner)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

from search.errors import SearchError
from search.study.config import SAMPLERS, SearchConfig


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
            import cmaes  # noqa: F401  (an optional dependency: imported only when asked for)
        except ImportError as exc:
            raise SearchError("sampler cmaes needs the `cmaes` package (pip install cmaes)") from exc
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    raise SearchError(f"unknown sampler {name!r} (use {', '.join(SAMPLERS)})")


MIN_TRIALS_PER_RUNG = 8
"""Trials that must have reached a rung before any trial is stopped there. Optuna's successive halving
judges from the first trial on (promoting only a new best until `rf` trials have reported), so in a
12- to 24-trial search almost every trial after the warm start was stopped on a small prefix and the
search ended as its warm start."""


class RungPruner(optuna.pruners.BasePruner):
    """Successive halving's rule, made patient: at each rung keep the top `1 / reduction_factor` of the
    trials that reached it, judged only once `min_trials` of them have.

    Stateless (it reads the intermediate values every trial reported at the rung, whatever its state), so
    several workers and resumed studies see the same rule.
    """

    def __init__(self, *, rungs: Sequence[int], reduction_factor: int, min_trials: int) -> None:
        self.rungs = frozenset(int(n) for n in rungs)
        self.reduction_factor = reduction_factor
        self.min_trials = min_trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step not in self.rungs:
            return False
        value = trial.intermediate_values[step]
        others = [
            t.intermediate_values[step]
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and step in t.intermediate_values
        ]
        if len(others) + 1 < self.min_trials:
            return False
        ranked = sorted([*others, value], reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE)
        keep = max(1, (len(ranked)) // self.reduction_factor)
        cutoff = ranked[keep - 1]
        if study.direction == optuna.study.StudyDirection.MAXIMIZE:
            return value < cutoff
        return value > cutoff


def make_pruner(config: SearchConfig, sizes: Sequence[int]) -> optuna.pruners.BasePruner:
    """Patient successive halving (or Optuna's Hyperband) over the nested prefixes; no pruning when off.

    The last size is the whole split, where a trial completes: only the sizes before it are rungs.
    """
    if not config.pruning or len(sizes) < 2:
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=sizes[0], max_resource=sizes[-1], reduction_factor=config.reduction_factor
        )
    return RungPruner(
        rungs=sizes[:-1], reduction_factor=config.reduction_factor, min_trials=MIN_TRIALS_PER_RUNG
    )
