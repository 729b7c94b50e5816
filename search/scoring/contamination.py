"""Is a target's search score higher than chance explains? The check for targets without a record.

A target whose config does not record the search split in use as left out of its training rows
(`search.tasks.provenance`) may have trained on the search examples, which biases selection towards
whatever keeps them memorised. `contamination_check` compares its search and held-out scores against the
gap the two splits' sizes explain; screen and search print `ContaminationCheck.warning` (one line on
stderr) when the gap is larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from search.scoring.bootstrap import resampled_scores

CONFIDENCE = 0.99
RESAMPLES = 1000


@dataclass(frozen=True)
class ContaminationCheck:
    """A target's search and held-out scores, their gap and the gap the splits' sizes explain.

    Attributes:
        task: the task.
        score_search, score_heldout: the target's scores (x100).
        gap: `score_search - score_heldout`.
        bound: the largest gap chance explains at `confidence` (one-sided), in score points.
        confidence: the bound's level.
        n_search, n_heldout: examples in each split.
    """

    task: str
    score_search: float
    score_heldout: float
    gap: float
    bound: float
    confidence: float
    n_search: int
    n_heldout: int

    @property
    def suspicious(self) -> bool:
        """The gap exceeds the bound: the target likely trained on its search examples."""
        return self.gap > self.bound

    def warning(self, *, target: str) -> str:
        """The one warning line (stderr) of a suspicious check."""
        return (
            f"warning: {target} scores {self.score_search:.2f} on its {self.task} search split "
            f"(n={self.n_search}) but {self.score_heldout:.2f} held out (n={self.n_heldout}): a gap of "
            f"{self.gap:.2f} points exceeds the {self.bound:.2f} its splits' sizes explain (one-sided "
            f"{self.confidence:.0%} bound); its config records no excluded search split, so it may have "
            "trained on the search examples: rerun with --search-from validation"
        )


def bootstrap_scores(
    *, task: str, labels: np.ndarray, predictions: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> np.ndarray:
    """The task's score (x100) on `resamples` seeded bootstrap resamples of the examples (row 0: the
    examples themselves, so `[0]` is the observed score)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    draws = np.vstack([np.arange(len(labels)), rng.integers(0, len(labels), size=(resamples, len(labels)))])
    return resampled_scores(
        task=task, labels=labels, predictions=np.asarray(predictions).reshape(-1), indices=draws
    )


def contamination_check(
    *,
    task: str,
    search_labels: np.ndarray,
    search_predictions: np.ndarray,
    heldout_labels: np.ndarray,
    heldout_predictions: np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ContaminationCheck:
    """Is a target's search score higher than its held-out score by more than chance explains?

    The statistic: gap = search score - held-out score (the task's metric x100). Under "the target never
    saw either split" the two scores differ only by sampling noise of two independent samples, so the
    bound is one-sided normal: `z(confidence) * sqrt(se_search**2 + se_heldout**2)`, each standard error
    the standard deviation of the metric over `resamples` seeded bootstrap resamples of that split's
    per-example predictions (two independent, unpaired bootstraps: the splits share no examples). For
    accuracy this is the binomial `sqrt(p(1-p)/n)` per split; for MCC and MRPC's mean(F1, accuracy) the
    bootstrap recomputes the metric itself, which no closed form gives. At the default 99%, a clean
    target warns about once in a hundred checks.

    Args:
        task: the task (its metric).
        search_labels, search_predictions: gold and predicted label ids on the search split.
        heldout_labels, heldout_predictions: the same on the held-out split.
        confidence: one-sided level of the bound.
        resamples: bootstrap resamples per split.
        seed: seeds both bootstraps (a check is deterministic).

    Returns:
        The check; `suspicious` when the gap exceeds the bound.
    """
    search = bootstrap_scores(
        task=task, labels=search_labels, predictions=search_predictions, resamples=resamples, seed=seed
    )
    heldout = bootstrap_scores(
        task=task, labels=heldout_labels, predictions=heldout_predictions, resamples=resamples, seed=seed + 1
    )
    se = float(np.hypot(np.std(search[1:], ddof=1), np.std(heldout[1:], ddof=1)))
    return ContaminationCheck(
        task=task,
        score_search=float(search[0]),
        score_heldout=float(heldout[0]),
        gap=float(search[0] - heldout[0]),
        bound=float(norm.ppf(confidence) * se),
        confidence=confidence,
        n_search=len(np.asarray(search_labels).reshape(-1)),
        n_heldout=len(np.asarray(heldout_labels).reshape(-1)),
    )
