"""The vector cache: one memory-mapped fp32 (or bf16) safetensors file per (base sha, candidate sha).

Screening and the study score many compositions of the same few vectors; computing tau once per pinned
pair and memory-mapping it afterwards keeps them off the checkpoints' slow path. Export never reads the
cache (`search.vectors.compose.task_vectors(cached=False)`), so an exported folder does not depend on it.

Every file carries a sha256 of its tensors (names, dtypes, shapes and bytes) in its safetensors metadata,
computed when it is written and checked when it is mapped: a flipped byte that still parses would
otherwise be trusted and silently move every score built on it. A file that fails the check, or predates
it, is rebuilt from the checkpoints (said once on stderr). Hashing costs one pass over the file, and each
process maps a cache file once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from registry.constants import CONFIG_NAME, vector_cache_dir
from registry.errors import ModelError
from search.vectors.taskvector import TaskVector

_SAFE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
CHECKSUM_KEY = "tensors_sha256"  # the metadata entry holding `tensors_digest` of the file's tensors

log = logging.getLogger(__name__)


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex of the tensors' names, dtypes, shapes and bytes, in name order (layout-independent)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        # The raw bytes, without a copy for the contiguous tensors written and mapped here.
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _safe_key(revision: str) -> str:
    """A revision usable in a file name: hex shas as they are, anything else hashed."""
    return (
        revision
        if re.fullmatch(r"[0-9a-fA-F]{7,64}", revision)
        else hashlib.sha1(revision.encode()).hexdigest()
    )


def cache_path(*, cache_dir: Path, base_revision: str, candidate_revision: str, dtype: torch.dtype) -> Path:
    """Where the vector of (base, candidate) at `dtype` lives in `cache_dir`."""
    suffix = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    return (
        Path(cache_dir) / _safe_key(base_revision) / f"{_safe_key(candidate_revision)}.{suffix}.safetensors"
    )


def is_cached(
    *,
    base_revision: str,
    candidate_revision: str,
    cache_dir: Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> bool:
    """Whether the vector of (base, candidate) at `dtype` has a file in the cache (not yet checked whole:
    `load_vector` does that when it loads it)."""
    root = Path(cache_dir) if cache_dir is not None else vector_cache_dir()
    return cache_path(
        cache_dir=root, base_revision=base_revision, candidate_revision=candidate_revision, dtype=dtype
    ).is_file()


def cached_pairs(
    pairs: Iterable[tuple[str, str]], *, base_revision: str, cache_dir: Path | None = None
) -> set[tuple[str, str]]:
    """The (repo_id, revision) pairs whose fp32 vector against `base_revision` is in the cache: the ones
    a composition needs no snapshot for (`registry.pins.checkpoint_dirs(..., unlocated=...)`)."""
    return {
        (repo_id, revision)
        for repo_id, revision in pairs
        if is_cached(base_revision=base_revision, candidate_revision=revision, cache_dir=cache_dir)
    }


def save_vector(
    vector: TaskVector,
    path: Path,
    *,
    dtype: torch.dtype = torch.float32,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a vector as safetensors (temp file + atomic rename, so a crash leaves no partial file).

    Returns:
        `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.to(dtype).contiguous() for n, t in vector.deltas.items()}
    meta = {
        "format": "pt",
        "vector_id": vector.vector_id,
        **(metadata or {}),
        CHECKSUM_KEY: tensors_digest(tensors),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def mmap_vector(path: Path) -> TaskVector:
    """A cached vector whose tensors are read-only views of the memory-mapped file (no copy in RAM).

    Raises:
        ModelError: if the file is truncated or malformed, has no checksum or fails it.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(header_len))
        meta = header.pop("__metadata__", {}) or {}
        data = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8)
        start = 8 + header_len
        deltas: dict[str, torch.Tensor] = {}
        for name, info in header.items():
            lo, hi = info["data_offsets"]
            dtype = _SAFE_DTYPES[info["dtype"]]
            if start + hi > size:
                raise ValueError(f"tensor {name} runs past the end of the file")
            deltas[name] = data[start + lo : start + hi].view(dtype).view(info["shape"])
        digest = tensors_digest(deltas)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, struct.error) as exc:
        raise ModelError(f"{path}: unreadable cached vector ({exc})") from exc
    if CHECKSUM_KEY not in meta:
        raise ModelError(f"{path}: cached vector has no checksum (written by an older taskvec)")
    if meta[CHECKSUM_KEY] != digest:
        raise ModelError(f"{path}: cached vector fails its checksum (the file was damaged)")
    return TaskVector(deltas, vector_id=meta.get("vector_id", ""))


def load_vector(
    *,
    base_dir: Path,
    base_revision: str,
    candidate_dir: Path,
    candidate_revision: str,
    cache_dir: Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> TaskVector:
    """The task vector of a pinned candidate against a pinned base, through the cache.

    The cache holds one safetensors file per (base sha, candidate sha, dtype); a hit is memory-mapped,
    a miss is computed in fp32, written atomically and then memory-mapped. A damaged cache file (malformed,
    or failing its checksum) is recomputed, never trusted.

    Args:
        base_dir: folder of the base at `base_revision`.
        base_revision: the base's sha.
        candidate_dir: folder of the candidate at `candidate_revision`.
        candidate_revision: the candidate's sha.
        cache_dir: the cache folder (default: `registry.constants.vector_cache_dir()`).
        dtype: `torch.float32` (default) or `torch.bfloat16` storage (half the memory and bandwidth).

    Returns:
        The vector (tensors memory-mapped from the cache file).

    Raises:
        ModelError: if the candidate does not match the base (see `TaskVector.from_checkpoints`), or a bad
            cache file cannot be rebuilt because `candidate_dir` holds no snapshot (the file is removed).
    """
    if dtype not in (torch.float32, torch.bfloat16):
        raise ModelError(f"vector cache dtype must be float32 or bfloat16, not {dtype}")
    root = Path(cache_dir) if cache_dir is not None else vector_cache_dir()
    path = cache_path(
        cache_dir=root, base_revision=base_revision, candidate_revision=candidate_revision, dtype=dtype
    )
    if path.is_file():
        try:
            vector = mmap_vector(path)
            if vector.vector_id == candidate_revision:
                return vector
            found = vector.vector_id[:12] or "no revision"
            problem = f"{path}: cached vector is of {found}, not {candidate_revision[:12]}"
        except ModelError as exc:
            problem = str(exc)
        if not (Path(candidate_dir) / CONFIG_NAME).is_file():
            # The caller counted on the cache and did not locate the snapshot (a streamed screen may have
            # deleted it): drop the bad file so that a rerun locates the snapshot and rebuilds.
            path.unlink(missing_ok=True)
            raise ModelError(
                f"{problem}, and the snapshot of {candidate_revision[:12]} to rebuild it from is not on "
                "disk; removed it: run the command again to fetch the snapshot and rebuild the vector"
            )
        log.warning("%s; rebuilding it", problem)  # a bad entry is rebuilt below, never trusted
    vector = TaskVector.from_checkpoints(base=base_dir, finetuned=candidate_dir, vector_id=candidate_revision)
    save_vector(
        vector,
        path,
        dtype=dtype,
        metadata={"base_revision": base_revision, "candidate_revision": candidate_revision},
    )
    return mmap_vector(path)
