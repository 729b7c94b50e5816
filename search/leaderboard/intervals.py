"""A leaderboard row's held-out gain interval, recomputed from the predictions it stores (no rescoring).

Held-out scoring (`search.study.heldout`, `leaderboard --refresh`) stores both the row's and the target's
per-example predictions and the interval at the default level, resamples and seed; this recomputes it at
any of them, e.g. to check a gain at 99% or with more resamples.
"""

from __future__ import annotations

from search.scoring.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, GainInterval
from search.study.records import query, row_interval, stored_predictions


def recompute_interval(
    *,
    study: str,
    trial: int,
    db_url: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> GainInterval | None:
    """Trial `trial` of `study`'s held-out gain over the target with its paired bootstrap interval.

    Returns:
        The interval, or None for a row without stored predictions (not scored on held-out, or scored
        before they were stored).
    """
    rows = [r for r in query(db_url=db_url, study=study) if r["trial_number"] == trial]
    stored = stored_predictions(study=study, trial=trial, db_url=db_url) if rows else None
    if stored is None:
        return None
    return row_interval(rows[0], stored, resamples=resamples, seed=seed, level=level)
