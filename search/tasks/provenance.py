"""What a target trained on: the search split `taskvec finetune` leaves out of train, and its record.

A target fine-tuned by `taskvec finetune` trains on train minus the search split screen and search carve
from it (`training_rows`, `search_exclusion`), and records that split in its `config.json` under
`taskvec_search_split` (`search_split_record`) and in its card (`excluded_card_line`). A target whose
record matches the search split in use (`records_split`) is clean; any other may have trained on the
search examples, and screen and search check its scores (`search.scoring.contamination`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search.errors import DataError
from search.tasks.data import (
    SearchSource,
    Split,
    check_source,
    load_split,
    read_task_frame,
    subsample,
    without_split,
)

SEARCH_SPLIT_KEY = "taskvec_search_split"
NOT_EXCLUDED = (
    "Search split not excluded from training (--include-search-split): select with --search-from validation."
)
CONFIG_FILE = "config.json"


def search_split_record(split: Split, *, seed: int) -> dict[str, Any]:
    """What a fine-tuned model records of the search split it never trained on (config.json's
    `taskvec_search_split`): task, source (`train`, or `validation`: nothing excluded from train), the
    split's seed and size, and its fingerprint."""
    return {
        "task": split.task,
        "source": split.source,
        "seed": int(seed),
        "size": len(split),
        "fingerprint": split.fingerprint,
    }


def excluded_card_line(split: Split) -> str:
    """The model card's line naming the excluded search split."""
    return f"Search split excluded from training: {split.task} {split.fingerprint}"


@dataclass(frozen=True)
class Exclusion:
    """What a fine-tuning run leaves out of train, and what it records of it.

    Attributes:
        split: the search split to drop from the training rows (None: nothing to drop).
        record: config.json's `taskvec_search_split` (None: nothing recorded).
        card_line: the card's line saying what was left out.
    """

    split: Split | None
    record: dict[str, Any] | None
    card_line: str


def search_exclusion(
    *,
    task: str,
    data_dir: Path | None,
    search_size: int | None = None,
    split_seed: int = 0,
    search_from: SearchSource = "train",
    include_search_split: bool = False,
) -> Exclusion:
    """The search split a target must not train on: the one screen and search carve with the same rules
    (`load_split(task, split="search", size=search_size, seed=split_seed, source=search_from)`).

    From `train` it is dropped from the training rows and recorded; from `validation` nothing is dropped
    from train and the validation half is recorded (source `validation`); `include_search_split` (from
    train) drops and records nothing.

    Raises:
        DataError: unknown source, unreadable data.
    """
    check_source(search_from)
    if include_search_split and search_from == "train":
        return Exclusion(split=None, record=None, card_line=NOT_EXCLUDED)
    split = load_split(
        task, split="search", data_dir=data_dir, size=search_size, seed=split_seed, source=search_from
    )
    record = search_split_record(split, seed=split_seed)
    if search_from == "train":
        return Exclusion(split=split, record=record, card_line=excluded_card_line(split))
    line = f"Search split carved from validation (nothing excluded from train): {task} {split.fingerprint}"
    return Exclusion(split=None, record=record, card_line=line)


def rows_outside(frame: pd.DataFrame, exclusion: Exclusion, *, where: str) -> pd.DataFrame:
    """The train rows a target may train on: those outside `exclusion.split` (all when it is None).

    Raises:
        DataError: naming `where`, when no row is left.
    """
    if exclusion.split is None:
        return frame
    kept = without_split(frame, exclusion.split)
    if kept.empty:
        raise DataError(
            f"{where}: all {len(frame)} train rows are in the search split; pass a smaller --search-size "
            "or --include-search-split"
        )
    return kept


def training_rows(
    *,
    task: str,
    data_dir: Path,
    max_train: int | None = None,
    seed: int = 0,
    search_size: int | None = None,
    split_seed: int = 0,
    search_from: SearchSource = "train",
    include_search_split: bool = False,
) -> tuple[pd.DataFrame, Exclusion]:
    """The rows a fine-tuning run trains on: train minus the search split screen and search carve from it
    (`search_exclusion`), then `max_train` rows of a seeded permutation; and what it records.

    Raises:
        DataError: missing or malformed data, or a train with no row outside its search split.
    """
    frame = read_task_frame(data_dir=data_dir, task=task)
    exclusion = search_exclusion(
        task=task,
        data_dir=data_dir,
        search_size=search_size,
        split_seed=split_seed,
        search_from=search_from,
        include_search_split=include_search_split,
    )
    kept = rows_outside(frame, exclusion, where=f"{data_dir}/{task}")
    return subsample(kept, max_train=max_train, seed=seed), exclusion


def set_search_split_record(config: Any, record: Mapping[str, Any] | None) -> None:
    """Put `record` on a model config (a `PretrainedConfig`: saved into config.json), or remove any record
    it has when `record` is None: a base that was itself fine-tuned brings its own record along, which
    would vouch for a split this run may have trained on."""
    if hasattr(config, SEARCH_SPLIT_KEY):
        delattr(config, SEARCH_SPLIT_KEY)
    if record is not None:
        setattr(config, SEARCH_SPLIT_KEY, dict(record))


def recorded_search_split(model_dir: Path | str) -> dict[str, Any] | None:
    """The `taskvec_search_split` record of a model folder's config.json, or None (none, or unreadable:
    either way nothing vouches for the model)."""
    try:
        config = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    record = config.get(SEARCH_SPLIT_KEY) if isinstance(config, dict) else None
    return record if isinstance(record, dict) else None


def records_split(record: Mapping[str, Any] | None, split: Split) -> bool:
    """Whether `record` vouches for `split`: the same task and fingerprint (hence the same examples)."""
    return (
        bool(record) and record.get("task") == split.task and record.get("fingerprint") == split.fingerprint
    )
