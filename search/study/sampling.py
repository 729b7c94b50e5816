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
