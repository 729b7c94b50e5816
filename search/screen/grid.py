"""The lambda search of one candidate: the whole grid, or coarse-to-fine over it.

Both searches call `evaluate(lam)` (the composition `theta_T + lam * tau` scored on the current examples)
and return what they tried. `grid` tries every lambda in increasing order and stops at the first clearly
harmful one (`is_clearly_harmful`: more than `harm_margin` points below both the target and the best so
far). `coarse-to-fine` tries a few spread-out lambdas of the grid first (ascending, with the same stop;
by default one, the grid's middle), then refines around the best: each level tries the untried grid point
next to the best, on the side of its better neighbour (the target itself, lambda 0, is the neighbour below
the smallest lambda and costs nothing). On a grid no longer than the coarse points plus the levels it is
the grid search. One point and two steps (three evaluations) rather than two points and one step: on the
seed-0 pico zoo's four tasks the same three evaluations came closer to the grid's best (a walk of two
steps reaches a peak two points away) and cost less, since a walk that starts below the target turns
down towards it (`benchmarks/screen_eval.py` reports both).

In a racing screen's later rounds (`carry_on`) a candidate re-scores only the lambdas still racing on the
longer prefix (`search.screen.racing` drops those clearly behind its best), and coarse-to-fine refines once
more next to the best, with a lambda never tried before: the best lambda on a longer prefix may move.

Only grid points are tried, so a coarse-to-fine best is one the grid search would also have scored: the
two can be compared lambda for lambda, and a stored lambda is always one the user asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from search.errors import SearchError
from search.scoring.scorer import ScoreResult

LAMBDA_SEARCHES = ("coarse-to-fine", "grid")
DEFAULT_LAMBDA_SEARCH = "coarse-to-fine"
COARSE_POINTS = 1
REFINE_LEVELS = 2
# A race's first round, on 64 examples: two spread-out points, one step. A two-step walk from the middle
# follows the prefix's noise in its first step; on the whole split (a screen without racing) it need not.
RACE_COARSE_POINTS = 2
RACE_FIRST_LEVELS = 1
RACE_REFINE_LEVELS = 1  # per later racing round (`carry_on`): the prefix grows, the best may move by one

Evaluate = Callable[[float], ScoreResult]


def is_clearly_harmful(score: float, *, target_score: float, best_score: float, margin: float) -> bool:
    """A lambda is clearly harmful when it scores more than `margin` below both the target and the best."""
    return score < target_score - margin and score < best_score - margin


def _entry(lam: float, result: ScoreResult) -> dict[str, Any]:
    # "result": the caller's hook (its per-example label log-probs are stored by `save_screening`).
    return {"lambda": float(lam), "score": float(result.score), "n": int(result.n), "result": result}


def _ascending(
    evaluate: Evaluate, lambdas: Sequence[float], *, target_score: float, harm_margin: float
) -> list[dict[str, Any]]:
    tried: list[dict[str, Any]] = []
    best = -float("inf")
    for lam in lambdas:
        entry = _entry(lam, evaluate(float(lam)))
        tried.append(entry)
        best = max(best, entry["score"])
        if is_clearly_harmful(entry["score"], target_score=target_score, best_score=best, margin=harm_margin):
            break
    return tried


def grid_search(
    evaluate: Evaluate, *, lambdas: Sequence[float], target_score: float, harm_margin: float
) -> list[dict[str, Any]]:
    """Every lambda of the grid, ascending, stopping at the first clearly harmful one.

    Returns:
        `[{"lambda", "score", "n", "result"}]` for the lambdas tried, ascending.
    """
    grid = sorted({float(x) for x in lambdas})
    return _ascending(evaluate, grid, target_score=target_score, harm_margin=harm_margin)


def coarse_indices(m: int, points: int) -> list[int]:
    """Indices of `points` spread-out grid points of an m-point grid (the middles of equal parts)."""
    return sorted({min(m - 1, int((m - 1) * (2 * k + 1) / (2 * points) + 0.5)) for k in range(points)})


def coarse_to_fine(
    evaluate: Evaluate,
    *,
    lambdas: Sequence[float],
    target_score: float,
    harm_margin: float,
    points: int = COARSE_POINTS,
    levels: int = REFINE_LEVELS,
) -> list[dict[str, Any]]:
    """A few spread-out grid points, then `levels` refinements next to the best.

    Args:
        evaluate: scores one lambda.
        lambdas: the grid.
        target_score: the target's score on the same examples (lambda 0, never evaluated).
        harm_margin: see `is_clearly_harmful`; applies to the coarse points (ascending).
        points: coarse points.
        levels: refinement steps, one evaluation each.

    Returns:
        `[{"lambda", "score", "n", "result"}]` for the lambdas tried, ascending.
    """
    grid = sorted({float(x) for x in lambdas})
    if len(grid) <= points + levels:
        return grid_search(evaluate, lambdas=grid, target_score=target_score, harm_margin=harm_margin)
    coarse = [grid[i] for i in coarse_indices(len(grid), points)]
    tried = _ascending(evaluate, coarse, target_score=target_score, harm_margin=harm_margin)
    scores = {grid.index(t["lambda"]): t["score"] for t in tried}
    stopped_at = max(scores) if len(tried) < len(coarse) else len(grid)  # never refine past a harmful one
    for _ in range(levels):
        nxt = _refinement(scores, target_score=target_score, limit=min(stopped_at, len(grid) - 1))
        if nxt is None:
            break
        entry = _entry(grid[nxt], evaluate(grid[nxt]))
        tried.append(entry)
        scores[nxt] = entry["score"]
    return sorted(tried, key=lambda t: t["lambda"])


def _refinement(scores: dict[int, float], *, target_score: float, limit: int) -> int | None:
    """The untried grid index next to the best, towards its better neighbour (index -1: the target)."""
    known = {-1: target_score, **scores}
    best = max(known, key=lambda i: (known[i], -i))
    below = max((i for i in known if i < best), default=None)
    above = min((i for i in known if i > best), default=None)
    down = best - 1 if below is not None and best - 1 > below else None
    if above is None:
        up = best + 1 if best + 1 <= limit else None  # the curve still rises at the best: look past it
    else:
        up = best + 1 if best + 1 < above else None
    if up is not None and down is not None:
        # Towards the better neighbour; with none above, the curve rises into the untried end.
        return up if above is None or known[above] >= known[below] else down
    return up if up is not None else down


def carry_on(
    evaluate: Evaluate,
    *,
    how: str,
    lambdas: Sequence[float],
    racing: Sequence[float],
    seen: Collection[float],
    target_score: float,
    levels: int = RACE_REFINE_LEVELS,
) -> list[dict[str, Any]]:
    """A later racing round's lambda search: the lambdas still racing, then (coarse-to-fine) refinements.

    Args:
        evaluate: scores one lambda on this round's prefix.
        how: the lambda search (`LAMBDA_SEARCHES`); only coarse-to-fine refines.
        lambdas: the grid.
        racing: the candidate's lambdas still racing (scored again on this prefix).
        seen: every lambda it tried in earlier rounds: one dropped there is not tried again.
        target_score: the target's score on this prefix.
        levels: refinements, one evaluation each, next to the best (`coarse_to_fine`'s rule).

    Returns:
        `[{"lambda", "score", "n", "result"}]` for the lambdas scored on this prefix, ascending.
    """
    grid = sorted({float(x) for x in lambdas})
    tried = [_entry(lam, evaluate(float(lam))) for lam in sorted({float(x) for x in racing})]
    for _ in range(levels if how == "coarse-to-fine" else 0):
        nxt = _next_to_best(tried, grid=grid, seen=seen, target_score=target_score)
        if nxt is None:
            break
        tried.append(_entry(grid[nxt], evaluate(grid[nxt])))
    return sorted(tried, key=lambda t: t["lambda"])


def _next_to_best(
    tried: list[dict[str, Any]], *, grid: list[float], seen: Collection[float], target_score: float
) -> int | None:
    """The grid neighbour of the best never tried: towards the better side when both are (`_refinement`),
    else the one left (a dropped neighbour is behind, so the peak may lie on the other side)."""
    scores = {grid.index(t["lambda"]): t["score"] for t in tried}
    best = max(scores, key=lambda i: (scores[i], -i))
    new = [j for j in (best + 1, best - 1) if 0 <= j < len(grid) and j not in scores and grid[j] not in seen]
    if len(new) == 2:
        pick = _refinement(scores, target_score=target_score, limit=len(grid) - 1)
        return pick if pick in new else new[0]
    return new[0] if new else None


@dataclass(frozen=True)
class Arms:
    """A survivor's next round: its lambdas still `racing`, and every lambda it has tried (`seen`)."""

    racing: tuple[float, ...]
    seen: frozenset[float]


def round_search(
    evaluate: Evaluate,
    *,
    how: str,
    lambdas: Sequence[float],
    harm_margin: float,
    arms: Arms | None,
    target_score: float,
) -> list[dict[str, Any]]:
    """A racing candidate's lambda search in one round: the whole search first (`arms` None), then its
    lambdas still racing (`carry_on`). The one rule `search.screen.racing.screen_race` and
    `benchmarks/screen_eval.py` both replay."""
    if arms is None:
        return search_lambdas(
            evaluate,
            how=how,
            lambdas=lambdas,
            target_score=target_score,
            harm_margin=harm_margin,
            points=RACE_COARSE_POINTS,
            levels=RACE_FIRST_LEVELS,
        )
    return carry_on(
        evaluate, how=how, lambdas=lambdas, racing=arms.racing, seen=arms.seen, target_score=target_score
    )


def search_lambdas(
    evaluate: Evaluate,
    *,
    how: str,
    lambdas: Sequence[float],
    target_score: float,
    harm_margin: float,
    points: int = COARSE_POINTS,
    levels: int = REFINE_LEVELS,
) -> list[dict[str, Any]]:
    """Dispatch to `grid_search` or `coarse_to_fine` (with `points` and `levels`) by name (`LAMBDA_SEARCHES`).

    Raises:
        SearchError: for an unknown name.
    """
    if how == "grid":
        return grid_search(evaluate, lambdas=lambdas, target_score=target_score, harm_margin=harm_margin)
    if how == "coarse-to-fine":
        return coarse_to_fine(
            evaluate,
            lambdas=lambdas,
            target_score=target_score,
            harm_margin=harm_margin,
            points=points,
            levels=levels,
        )
    raise SearchError(f"unknown lambda search {how!r} (use {' or '.join(LAMBDA_SEARCHES)})")


def check_lambda_search(how: str) -> str:
    """`how` if it names a lambda search.

    Raises:
        SearchError: for an unknown name.
    """
    if how not in LAMBDA_SEARCHES:
        raise SearchError(f"unknown lambda search {how!r} (use {' or '.join(LAMBDA_SEARCHES)})")
    return how
