"""Chunks of a search split's fixed order, so a growing prefix scores each example once.

A racing screen (`search.screen.racing`) scores each candidate on prefixes 64, 128, ... of the scorer's
fixed order. `ChunkScorer` scores the chunk between two consecutive prefix sizes, `ChunkCache` keeps each
(candidate, lambda)'s chunks, and `join_results` puts chunks back together as the result
`Scorer.score(prefix=n)` gives: the same examples in the same order with the same predictions (and every
other per-example array a scorer returns), metrics recomputed on the union.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import fields, replace
from typing import Generic, TypeVar

import numpy as np

from search.scoring.scorer import Scorer, ScoreResult
from search.tasks.data import Split
from search.tasks.glue import get_task

K = TypeVar("K", bound=Hashable)


def join_results(parts: Sequence[ScoreResult]) -> ScoreResult:
    """Results on consecutive chunks of one order as one result on their union (metrics recomputed).

    Every per-example array is joined along its first axis, so arrays a scorer adds later come along.
    """
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    joined = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts], axis=0)
        for f in fields(first)
        if isinstance(getattr(first, f.name), np.ndarray)
    }
    metrics = get_task(first.task).compute_metrics(joined["labels"], joined["predictions"])
    return replace(first, n=sum(p.n for p in parts), score=metrics["score"], metrics=metrics, **joined)


def slice_result(result: ScoreResult, start: int, stop: int) -> ScoreResult:
    """Examples `start:stop` of a result (in its order), metrics recomputed."""
    if start <= 0 and stop >= result.n:
        return result
    cut = {
        f.name: getattr(result, f.name)[start:stop]
        for f in fields(result)
        if isinstance(getattr(result, f.name), np.ndarray) and len(getattr(result, f.name)) == result.n
    }
    metrics = get_task(result.task).compute_metrics(cut["labels"], cut["predictions"])
    n = len(cut["labels"])
    return replace(result, n=n, score=metrics["score"], metrics=metrics, **cut)


def prefix_of(result: ScoreResult, n: int) -> ScoreResult:
    """The first n examples of a result (in its order), metrics recomputed."""
    return slice_result(result, 0, n)


class ChunkScorer:
    """Scores the chunks between consecutive prefix sizes of a scorer's fixed order.

    Chunk k holds the examples `scorer.order[sizes[k-1]:sizes[k]]`; its result is put back in that order
    with `positions` the examples' rows in the whole split, so chunks 0..k joined (`join_results`) are the
    examples, order and predictions of `scorer.score(prefix=sizes[k])`.

    Args:
        scorer: the whole split's scorer (its model, mode, truncation, order and autocast are used).
        sizes: increasing prefix sizes, the last one the split's size.
    """

    def __init__(self, scorer: Scorer, sizes: Sequence[int]) -> None:
        self.scorer = scorer
        self.sizes = [int(n) for n in sizes]
        self.examples_scored = 0
        split = scorer.split
        self._rows: list[np.ndarray] = []
        self._chunks: list[Scorer] = []
        prev = 0
        for n in self.sizes:
            rows = scorer.order[prev:n]
            digest = hashlib.sha256(f"{split.fingerprint}:race:{prev}:{n}".encode()).hexdigest()
            chunk = Split(
                task=split.task,
                name=split.name,
                examples=split.examples.iloc[rows].reset_index(drop=True),
                fingerprint=digest,
            )
            self._rows.append(rows)
            self._chunks.append(
                Scorer(
                    scorer.model,
                    scorer.tokenizer,
                    chunk,
                    mode=scorer.mode,
                    batch_tokens=scorer.batch_tokens,
                    max_batch=scorer.max_batch,
                    max_input_length=scorer.max_input_length,
                    order_seed=scorer.order_seed,
                    autocast_dtype=scorer.autocast_dtype,
                )
            )
            prev = n

    def chunk(self, k: int) -> ScoreResult:
        """Chunk k scored with the model's current weights, in the whole split's order."""
        result = self._chunks[k].score()
        self.examples_scored += result.n
        back = np.argsort(result.positions, kind="stable")  # chunk rows are in the whole order already
        per_example = {
            f.name: getattr(result, f.name)[back]
            for f in fields(result)
            if isinstance(getattr(result, f.name), np.ndarray) and len(getattr(result, f.name)) == result.n
        }
        per_example["positions"] = self._rows[k][result.positions[back]]
        return replace(result, fingerprint=self.scorer.split.fingerprint, **per_example)


class ChunkCache(Generic[K]):
    """Each (candidate, lambda)'s chunks scored so far: a prefix costs only the chunks not yet scored.

    Args:
        sizes: the race's prefix sizes.
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        self.sizes = [int(n) for n in sizes]
        self.examples_scored = 0
        self._parts: dict[tuple[K, float], list[ScoreResult]] = {}

    def result(
        self,
        key: K,
        lam: float,
        *,
        upto: int,
        compute: Callable[[int], ScoreResult],
        prepare: Callable[[], None] = lambda: None,
    ) -> ScoreResult:
        """The result of (key, lam) on prefix `sizes[upto]`.

        Args:
            key, lam: the candidate and its lambda.
            upto: the round (prefix index).
            compute: `compute(k)` scores chunk k with the composition in place.
            prepare: called once before the first missing chunk is computed (sets the composition).
        """
        parts = self._parts.setdefault((key, float(lam)), [])
        if len(parts) <= upto:
            prepare()
        while len(parts) <= upto:
            part = compute(len(parts))
            self.examples_scored += part.n
            parts.append(part)
        return join_results(parts[: upto + 1])

    def forget(self, key: K) -> None:
        """Drop a candidate's chunks (once it is out of the race)."""
        for k in [k for k in self._parts if k[0] == key]:
            del self._parts[k]
