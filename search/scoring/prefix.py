"""Nested prefixes of a search split: the pruner's rungs, each example scored once per trial."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from search.scoring.scorer import Scorer
from search.tasks.data import Split
from search.tasks.glue import get_task

MIN_PREFIX = 64
"""The smallest prefix a pruner may judge: on fewer examples one example moves accuracy by more than 1.5
points and MRPC's F1 or CoLA's MCC swing wildly, so a trial would be stopped on noise."""


def prefix_sizes(
    n_examples: int, *, rungs: int, reduction_factor: int, pruning: bool, min_prefix: int = MIN_PREFIX
) -> list[int]:
    """Nested prefix lengths reported to the pruner (just the whole split without pruning).

    The sizes are the successive-halving rungs `s0 * rf**k` (s0 = ceil(n / rf**(rungs-1))), so every
    intermediate report lands exactly on a rung; the last prefix is the whole split. Rungs are dropped
    (fewest first) until the first prefix holds at least `min_prefix` examples.

    Args:
        n_examples: search split size.
        rungs: number of prefixes at most.
        reduction_factor: ratio between consecutive prefixes.
        pruning: whether intermediate prefixes are scored at all.
        min_prefix: the smallest first prefix (one prefix, the whole split, when none is that large).

    Returns:
        Strictly increasing sizes ending with `n_examples`.
    """
    while rungs > 1 and math.ceil(n_examples / reduction_factor ** (rungs - 1)) < min_prefix:
        rungs -= 1
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
        autocast_dtype: the scorers' autocast dtype (None: fp32).
    """

    def __init__(
        self,
        model,
        tokenizer,
        split,
        *,
        sizes: Sequence[int],
        mode: str = "rank",
        order_seed: int = 0,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        kwargs = dict(mode=mode, order_seed=order_seed, autocast_dtype=autocast_dtype)
        self.full = Scorer(model, tokenizer, split, **kwargs)
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
            self.chunks.append(Scorer(model, tokenizer, chunk, **kwargs))
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
