"""FusionBench's baseline: task arithmetic with one global lambda over all of a study's ingredients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from search.errors import SearchError
from search.study.config import SearchConfig
from search.study.live import open_live
from search.study.objectives import combine

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
    live = open_live(config, create=False)
    kind = "mean" if config.kind == "pareto" else config.kind
    references = live.context.reference_scores("search")
    grid: dict[float, float] = {}
    per_lambda: dict[float, tuple[dict[str, float], bool]] = {}
    for lam in lambdas:
        live.composer.apply([float(lam)] * len(live.repos))
        scores = {t: float(s.full.score().score) for t, s in live.scorers.items()}
        ok = all(g.violation(float(g.scorer.score().score)) <= 0 for g in live.guards)
        grid[float(lam)] = combine(scores, kind=kind, references=references)
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
        objective_heldout=combine(heldout, kind=kind, references=live.context.reference_scores("heldout")),
        feasible=per_lambda[best][1],
    )
