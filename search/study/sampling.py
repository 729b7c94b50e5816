"""How trials are proposed (the sampler) and stopped early (the pruner)."""

from __future__ import annotations

import math
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


PATIENT_TRIALS = 8
"""Trials per rung before a small study's pruner judges there. Optuna's successive halving judges from the
first trial on (promoting only a new best until `rf` trials have reported), so in a 12- to 24-trial search
almost every trial after the warm start was stopped on a small prefix and the search ended as its warm
start; waiting for 8 lets the sampler's first proposals run to the end."""
SMALL_BUDGET = 24
"""Budgets up to this many trials get the full `PATIENT_TRIALS` warm-up."""
MIN_TRIALS_PER_RUNG = 4
"""The shortest warm-up, reached at twice `SMALL_BUDGET`: the rung's cutoff (its top 1 / rf) is then set
by at least one trial of four that ran the rung."""


def min_trials_per_rung(n_trials: int) -> int:
    """Trials that must have reached a rung before the pruner stops any trial there, in a study of
    `n_trials` (its quota): 8 up to 24 trials, `ceil(8 * 24 / n_trials)` above that, and never under 4
    (from 48 trials on).

    A trial stopped wrongly costs a small budget a large share of its search and a long one little, while
    each full warm-up trial costs a long run's pruner its savings (8 of 40 trials scored in full were 42% of
    the examples at t5-small shape).
    """
    if n_trials <= SMALL_BUDGET:
        return PATIENT_TRIALS
    return max(MIN_TRIALS_PER_RUNG, math.ceil(PATIENT_TRIALS * SMALL_BUDGET / n_trials))


class RungPruner(optuna.pruners.BasePruner):
    """Successive halving's rule, made patient: at each rung keep the top `1 / reduction_factor` of the
    trials that reached it, judged only once `min_trials` of them have.

    A trial tied with earlier ones ranks behind them: on a small prefix a discrete metric takes few values
    (accuracy on 67 examples, 68), many compositions predict alike, and a tie shows nothing better than
    what already ran (keeping every tie scored 3% more examples in bench_pruning's 40-trial study).
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
            (t.intermediate_values[step], t.number)
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and step in t.intermediate_values
        ]
        if len(others) + 1 < self.min_trials:
            return False
        keep = max(1, (len(others) + 1) // self.reduction_factor)
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        ahead = sum(
            sign * other > sign * value or (other == value and number < trial.number)
            for other, number in others
        )
        return ahead >= keep


def make_pruner(config: SearchConfig, sizes: Sequence[int]) -> optuna.pruners.BasePruner:
    """Patient successive halving (or Optuna's Hyperband) over the nested prefixes; no pruning when off.

    The last size is the whole split, where a trial completes: only the sizes before it are rungs. The
    warm-up per rung follows the study's quota (`min_trials_per_rung`).
    """
    if not config.pruning or len(sizes) < 2:
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=sizes[0], max_resource=sizes[-1], reduction_factor=config.reduction_factor
        )
    return RungPruner(
        rungs=sizes[:-1],
        reduction_factor=config.reduction_factor,
        min_trials=min_trials_per_rung(config.n_trials),
    )
