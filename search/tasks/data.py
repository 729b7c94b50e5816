"""GLUE data: from the Hub dataset `nyu-mll/glue` or a local folder in its parquet layout.

Two splits per task. The **search split** is carved from GLUE *train*, stratified by label with a seeded
permutation per label, and is the only data selection ever sees. The **held-out split** is GLUE
*validation*. Each split carries a fingerprint (sha256 of idx, texts and label in split order) that is
stored with every score, so a score can always be traced to exactly the examples it was computed on.

A target of unknown provenance may have been fine-tuned on all of train, search split included. For it,
`source="validation"` carves the search split from one stratified half of GLUE validation and holds out
the other half (`validation_halves`): both halves depend only on (labels, seed), so they are stable and
disjoint. `taskvec finetune` excludes the train search split from its training rows (`without_split`).

Local layout (as on the Hub): `DIR/<task>/{train,validation,test}-00000-of-00001.parquet`; `DIR` may also
be a pico-zoo root, whose GLUE folder is `DIR/glue/` and auxiliary datasets `DIR/aux/<dataset>/`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from huggingface_hub import constants as hub_constants

from registry.constants import hub_offline
from registry.sources.hub import unreachable_reason
from search.errors import DataError
from search.tasks.glue import GLUE_HUB_DATASET, TaskSpec, get_task

SplitName = Literal["search", "heldout"]
FileSplit = Literal["train", "validation", "test"]
SearchSource = Literal["train", "validation"]
SEARCH_SOURCES: tuple[str, ...] = ("train", "validation")

SPLIT_FILE = "{split}-00000-of-00001.parquet"
SEARCH_FRACTION = 0.10
SEARCH_MAX = 1000
SEARCH_MIN = 200


@dataclass(frozen=True, eq=False)
class Split:
    """A scored set of examples of one task.

    Attributes:
        task: task name (`mrpc`, `rte`, `cola`, `sst2`, ...).
        name: `search` or `heldout`.
        examples: GLUE columns (text fields, `label`, `idx`), index reset to 0..n-1.
        fingerprint: sha256 hex of (idx, texts, label) in split order.
        source: where the search split was carved from: `train` (held-out: all of validation) or
            `validation` (search: one half of validation, held-out: the other half).
    """

    task: str
    name: str
    examples: pd.DataFrame
    fingerprint: str
    source: str = "train"

    def __len__(self) -> int:
        return len(self.examples)


def fingerprint_examples(examples: pd.DataFrame, *, spec: TaskSpec) -> str:
    """sha256 of the examples' (idx, texts, label) in order; equal iff the scored data is equal.

    Args:
        examples: frame with the task's columns.
        spec: the task, naming the text columns.

    Returns:
        A 64-character hex digest.
    """
    digest = hashlib.sha256(spec.name.encode())
    cols = ["idx", *spec.text_fields, "label"]
    for row in examples[cols].itertuples(index=False, name=None):
        # Unit separators keep field boundaries unambiguous whatever the texts contain.
        digest.update(("\x1e" + "\x1f".join(str(v) for v in row)).encode())
    return digest.hexdigest()


def search_size(n_train: int) -> int:
    """Default search-split size: min(1000, 10% of train), at least 200 where train allows."""
    return min(n_train, max(SEARCH_MIN, min(SEARCH_MAX, round(SEARCH_FRACTION * n_train))))


def stratified_positions(labels: np.ndarray, *, size: int, seed: int) -> np.ndarray:
    """Row positions of a stratified sample of `size` rows, in ascending order.

    Each label gets its share of `size` (largest remainders break ties, in label order) and takes the
    first rows of its own seeded permutation, so the result depends only on (labels, size, seed).

    Args:
        labels: label of each row.
        size: number of rows wanted (at most len(labels)).
        seed: seed of the per-label permutations.

    Returns:
        Sorted int64 positions into `labels`.
    """
    labels = np.asarray(labels)
    size = min(size, len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - quota), kind="stable")[: size - int(quota.sum())]:
        quota[i] += 1
    rng = np.random.default_rng(seed)
    chosen = []
    for cls, k in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        chosen.append(members[rng.permutation(len(members))[:k]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _task_dir(data_dir: Path, task: str) -> Path:
    """`DIR/<task>`, or for a pico-zoo root `DIR/glue/<task>` or `DIR/aux/<dataset>/<task>`."""
    candidates = [data_dir / task, data_dir / "glue" / task]
    aux = data_dir / "aux"
    if aux.is_dir():
        candidates += sorted(d / task for d in aux.iterdir() if d.is_dir())
    for cand in candidates:
        if cand.is_dir():
            return cand
    raise DataError(f"{data_dir}: no folder for task {task!r} (expected {data_dir / task}/*.parquet)")


def _read_local(data_dir: Path, task: str, file_split: FileSplit) -> tuple[pd.DataFrame, str]:
    folder = _task_dir(Path(data_dir).expanduser(), task)
    files = sorted(folder.glob(f"{file_split}-*.parquet"))
    if not files:
        raise DataError(f"{folder}: no {file_split}-*.parquet file")
    frames = []
    for f in files:
        try:
            frames.append(pd.read_parquet(f))
        except Exception as exc:  # pyarrow raises several unrelated types for a corrupt file
            raise DataError(f"{f}: unreadable parquet ({str(exc).splitlines()[0]})") from exc
    where = str(files[0]) if len(files) == 1 else f"{folder}/{file_split}-*.parquet"
    return pd.concat(frames, ignore_index=True), where


def _read_hub(task: str, file_split: FileSplit, *, dataset: str) -> tuple[pd.DataFrame, str]:
    where = f"{dataset} ({task}, {file_split})"
    local = (
        f"pass --data DIR (or set TASKVEC_DATA) with a local copy laid out as "
        f"DIR/{task}/{file_split}-00000-of-00001.parquet"
    )
    offline = hub_offline()
    try:
        # Lazy: `import datasets` costs ~1.2 s (measured with -X importtime) and only this Hub path needs
        # it; every offline run (`--data DIR`, the demo, the tests) would pay it otherwise.
        import datasets

        offline = offline or bool(datasets.config.HF_HUB_OFFLINE)  # as datasets sees it (tests set it)
        # One request first, without retries: `datasets` retries an unreachable Hub for half a minute.
        unreachable = (
            None if offline or Path(dataset).exists() else unreachable_reason(hub_constants.ENDPOINT)
        )
        if unreachable is not None:
            raise DataError(
                f"{where}: cannot load from the Hub ({hub_constants.ENDPOINT} cannot be reached: {unreachable}); "
                f"offline, {local}, or set HF_HUB_OFFLINE=1 to use the datasets cache"
            )
        ds = datasets.load_dataset(dataset, task, split=file_split)
    except DataError:
        raise
    except Exception as exc:
        # `datasets` raises connection, not-found and offline errors of many types; all mean the same
        # thing to a user: this data is not reachable from here.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if offline:
            reason = "HF_HUB_OFFLINE is set, and it is not in the datasets cache"
        raise DataError(f"{where}: cannot load from the Hub ({reason}); offline, {local}") from exc
    return ds.to_pandas(), where


def validate_frame(frame: pd.DataFrame, *, spec: TaskSpec, where: str, file_split: FileSplit) -> pd.DataFrame:
    """Check a GLUE frame and return it with the task's columns only, index reset.

    Args:
        frame: the raw table.
        spec: the task it should hold.
        where: file or dataset name, used in error messages.
        file_split: `train`, `validation` or `test` (only `test` may have labels -1).

    Returns:
        The checked frame (columns `spec.columns`).

    Raises:
        DataError: naming `where` for an empty table, a missing column, a missing text or idx, a
            duplicate idx, or a label outside the task's ids.
    """
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} for task {spec.name}")
    if len(frame) == 0:
        raise DataError(f"{where}: no examples")
    frame = frame.loc[:, list(spec.columns)].reset_index(drop=True)
    nulls = [c for c in spec.columns if frame[c].isna().any()]
    if nulls:
        raise DataError(f"{where}: missing values in column(s) {', '.join(nulls)}")
    for col in ("label", "idx"):
        if not pd.api.types.is_integer_dtype(frame[col]):
            raise DataError(f"{where}: column {col!r} is {frame[col].dtype}, not integers")
    allowed = set(spec.label_ids) | ({-1} if file_split == "test" else set())
    bad = ~frame["label"].isin(sorted(allowed))
    if bad.any():
        raise DataError(
            f"{where}: label {int(frame['label'][bad].iloc[0])} (row {int(np.flatnonzero(bad)[0])}) "
            f"is not one of {spec.name}'s ids {spec.label_ids}"
        )
    if frame["idx"].duplicated().any():
        raise DataError(f"{where}: duplicate idx {int(frame['idx'][frame['idx'].duplicated()].iloc[0])}")
    for col in spec.text_fields:
        frame[col] = frame[col].astype(str)
    frame["label"] = frame["label"].astype(np.int64)
    frame["idx"] = frame["idx"].astype(np.int64)
    return frame


def load_frame(
    task: str,
    *,
    file_split: FileSplit,
    data_dir: Path | None = None,
    hub_dataset: str = GLUE_HUB_DATASET,
) -> pd.DataFrame:
    """One whole GLUE file split (`train`, `validation` or `test`), validated.

    Args:
        task: task name.
        file_split: which file.
        data_dir: local folder in the Hub's parquet layout; None loads `hub_dataset` through `datasets`.
        hub_dataset: dataset repo (or a local dataset folder) used when `data_dir` is None.

    Returns:
        The checked frame.

    Raises:
        DataError: unknown task, unreachable or malformed data (one line naming the file and reason).
    """
    return _load_frame(task, file_split=file_split, data_dir=data_dir, hub_dataset=hub_dataset)[0]


def _load_frame(
    task: str, *, file_split: FileSplit, data_dir: Path | None, hub_dataset: str
) -> tuple[pd.DataFrame, str]:
    """`load_frame`, and where the frame came from (a file or a Hub dataset, for messages)."""
    spec = get_task(task)
    if data_dir is None:
        frame, where = _read_hub(task, file_split, dataset=hub_dataset)
    else:
        frame, where = _read_local(Path(data_dir), task, file_split)
    return validate_frame(frame, spec=spec, where=where, file_split=file_split), where


def validation_halves(labels: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint stratified halves of validation: (search positions, held-out positions), ascending.

    The search half is `stratified_positions(labels, size=len(labels) // 2, seed=seed)`, the held-out
    half every other row, so both depend only on (labels, seed) and each keeps the label shares.
    """
    labels = np.asarray(labels)
    search = stratified_positions(labels, size=len(labels) // 2, seed=seed)
    return search, np.setdiff1d(np.arange(len(labels), dtype=np.int64), search)


def check_source(source: str) -> None:
    """Raises DataError for a search source other than `train` or `validation`."""
    if source not in SEARCH_SOURCES:
        raise DataError(f"unknown search source {source!r} (use {' or '.join(SEARCH_SOURCES)})")


def load_split(
    task: str,
    *,
    split: SplitName,
    data_dir: Path | None = None,
    size: int | None = None,
    seed: int = 0,
    hub_dataset: str = GLUE_HUB_DATASET,
    source: SearchSource = "train",
) -> Split:
    """The search split or the held-out split of a task.

    Args:
        task: task name (`mrpc`, `rte`, `cola`, `sst2`, or an auxiliary task).
        split: `search` or `heldout`.
        data_dir: local parquet folder (or pico-zoo root); None loads from the Hub.
        size: search from train: number of train examples (default `search_size(len(train))`); otherwise
            None keeps all of the split's rows (all of validation, or all of its half), a number takes a
            stratified sample of them (for quick looks only).
        seed: seed of the stratified sample (and, with `source="validation"`, of the two halves).
        hub_dataset: Hub dataset used when `data_dir` is None.
        source: `train` (search: a stratified sample of train, held-out: validation) or `validation`
            (search and held-out: the two `validation_halves`).

    Returns:
        The split, examples in their file order, with its fingerprint.

    Raises:
        DataError: bad split name or source, a size that is not positive or larger than the data (naming
            the file and its rows: a silently smaller split would be scored as if it were the asked one),
            unreachable or malformed data.
    """
    if split not in ("search", "heldout"):
        raise DataError(f"unknown split {split!r} (use search or heldout)")
    check_source(source)
    if size is not None and size <= 0:
        raise DataError(f"{task}: split size must be positive, got {size}")
    spec = get_task(task)
    file_split: FileSplit = "train" if split == "search" and source == "train" else "validation"
    frame, where = _load_frame(task, file_split=file_split, data_dir=data_dir, hub_dataset=hub_dataset)
    if source == "validation":
        halves = validation_halves(frame["label"].to_numpy(), seed=seed)
        frame = frame.iloc[halves[0] if split == "search" else halves[1]].reset_index(drop=True)
        where = f"the {split} half of {where}"
    if size is not None and size > len(frame):
        raise DataError(
            f"{task}: a {split} split of {size} examples was asked for, but {where} has only {len(frame)} "
            f"rows (ask for at most {len(frame)})"
        )
    if split == "search" and source == "train":
        size = search_size(len(frame)) if size is None else size
    if size is not None and size < len(frame):
        frame = frame.iloc[stratified_positions(frame["label"].to_numpy(), size=size, seed=seed)]
        frame = frame.reset_index(drop=True)
    fingerprint = fingerprint_examples(frame, spec=spec)
    return Split(task=task, name=split, examples=frame, fingerprint=fingerprint, source=source)


def without_split(frame: pd.DataFrame, split: Split) -> pd.DataFrame:
    """The rows of `frame` whose `idx` is not in `split` (fine-tuning data disjoint from a search split)."""
    return frame[~frame["idx"].isin(split.examples["idx"])].reset_index(drop=True)


def read_task_frame(*, data_dir: Path, task: str, split: str = "train") -> pd.DataFrame:
    """One split of a task from a GLUE-layout folder (`<data_dir>/<task>/<split>-00000-of-00001.parquet`).

    Raises:
        DataError: if the file is missing or lacks the task's columns.
    """
    spec = get_task(task)
    path = Path(data_dir) / task / SPLIT_FILE.format(split=split)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected the nyu-mll/glue layout <dir>/{task}/{path.name})")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {missing} for task {task!r}")
    return frame


def subsample(frame: pd.DataFrame, *, max_train: int | None, seed: int) -> pd.DataFrame:
    """The first `max_train` rows of a seeded permutation (all rows, permuted, if None)."""
    order = np.random.default_rng(seed).permutation(len(frame))
    if max_train is not None:
        order = order[:max_train]
    return frame.iloc[order].reset_index(drop=True)
