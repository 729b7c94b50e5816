"""`taskvec eval`: load a model once and score it on whole splits, task after task."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from registry.progress import progress_bar
from search.scoring.device import resolve
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Mode, Scorer, ScoreResult
from search.tasks.data import SearchSource, check_source, load_split
from search.tasks.glue import GLUE_TASKS, get_task


def iter_tasks(task: str) -> Iterator[str]:
    """`all` -> the four GLUE targets in the paper's order; a single task name otherwise."""
    yield from (GLUE_TASKS if task == "all" else (task,))


def evaluate(
    *,
    model: str | Path,
    tasks: Sequence[str],
    split: Literal["search", "heldout"] = "heldout",
    mode: Mode = "rank",
    data_dir: Path | None = None,
    size: int | None = None,
    seed: int = 0,
    revision: str | None = None,
    progress: bool = False,
    search_from: SearchSource = "train",
    device: str | None = None,
    dtype: str = "auto",
) -> list[ScoreResult]:
    """Load a model once and score it on each task (the `taskvec eval` command).

    Args:
        model: model folder or Hub repo id.
        tasks: task names.
        split: `heldout` (validation, default) or `search`.
        mode: `rank` or `generate`.
        data_dir: local GLUE parquet folder; None loads from the Hub.
        size: split size (see `search.tasks.data.load_split`).
        seed: seed of the search split.
        revision: Hub revision of the model.
        progress: show a rich progress bar over tasks.
        search_from: `train` or `validation` (the splits are then validation's two halves).
        device: `auto`, `cpu`, `cuda`, `cuda:N` or `mps` (None: `TASKVEC_DEVICE`, else auto).
        dtype: scoring precision, `auto`, `fp32`, `bf16` or `fp16` (`search.scoring.device`).

    Returns:
        One result per task, in order.

    Raises:
        DataError, ModelError: unreadable data or model (one line each).
        SearchError: a device or dtype that cannot be used here.
    """
    check_source(search_from)
    for t in tasks:
        get_task(t)  # fail on a typo before loading anything
    where = resolve(device, dtype)
    net, tok = load_seq2seq(model, revision=revision, device=where.device)
    results = []
    with progress_bar(enabled=progress, transient=True) as bar:
        job = bar.add_task("scoring", total=len(tasks))
        for t in tasks:
            bar.update(job, description=f"scoring {t} ({split}, {mode})")
            data = load_split(t, split=split, data_dir=data_dir, size=size, seed=seed, source=search_from)
            results.append(Scorer(net, tok, data, mode=mode, autocast_dtype=where.autocast).score())
            bar.advance(job)
    return results
