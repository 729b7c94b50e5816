"""The one composition path: pinned ingredients -> task vectors -> a Composer on a live model.

Screening (one candidate at a time), the study (its top-K candidates), the leaderboard's held-out refresh
(a row's ingredients) and export (a recipe's) all build their composer here, so a composition scored in
one place is the same composition everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from registry.pins import Pinned
from search.vectors.cache import load_vector
from search.vectors.composer import Composer
from search.vectors.taskvector import TaskVector


def task_vectors(
    *, base: Pinned, ingredients: Sequence[Pinned], cache_dir: Path | None = None, cached: bool = True
) -> list[TaskVector]:
    """`tau_i = theta_i - theta_base` for each located ingredient, in order.

    Args:
        base: the pinned, located base.
        ingredients: pinned, located candidates.
        cache_dir: the vector cache (default: the registry's); ignored when `cached` is False.
        cached: go through the vector cache (memory-mapped fp32 files); False computes in memory (export,
            which must not depend on the cache's state).
    """
    if not cached:
        return [
            TaskVector.from_checkpoints(base=base.path, finetuned=i.path, vector_id=i.revision)
            for i in ingredients
        ]
    return [
        load_vector(
            base_dir=base.path,
            base_revision=base.revision,
            candidate_dir=i.path,
            candidate_revision=i.revision,
            cache_dir=cache_dir,
        )
        for i in ingredients
    ]


def open_composer(
    model: Any,
    *,
    target: Path,
    base: Pinned,
    ingredients: Sequence[Pinned],
    method: str = "task_arithmetic",
    method_options: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
    cached: bool = True,
) -> Composer:
    """A Composer that rewrites `model` in place as `theta_T + combine(lambda_i tau_i)`.

    Args:
        model: the live model, loaded from `target`.
        target: folder of the target (its weights are the composer's fp32 master copy).
        base: the pinned, located base the vectors are taken against.
        ingredients: pinned, located candidates, in coefficient order.
        method: combine method (`task_arithmetic`, `ties`, `dare`).
        method_options: the method's options (None: its defaults).
        cache_dir, cached: see `task_vectors`.

    Raises:
        ModelError: an ingredient that does not match the base or the model.
    """
    vectors = task_vectors(base=base, ingredients=ingredients, cache_dir=cache_dir, cached=cached)
    return Composer(
        model,
        target=target,
        vectors=vectors,
        method=method,
        method_options=dict(method_options or {}) or None,
    )
