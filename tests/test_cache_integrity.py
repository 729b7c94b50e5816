"""A vector-cache file that still parses but whose bytes changed is rebuilt, never trusted (issue 16).

Before checksums, a flipped byte in a cached vector moved a screening from 61.2 to 49.1 with no word.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from registry.errors import ModelError
from search.vectors import TaskVector, cache_path, load_vector
from search.vectors.cache import CHECKSUM_KEY, save_vector, tensors_digest
from tests.t5_repos import make_base, make_finetune

BASE_SHA, CAND_SHA = "b" * 40, "c" * 40


@pytest.fixture
def pinned(tmp_path):
    """A base and a candidate on disk, the candidate's exact vector, and `load_vector`'s arguments."""
    base = make_base(tmp_path, "v1_1")
    cand = make_finetune(base, tmp_path / "cand", seed=7)
    direct = TaskVector.from_checkpoints(base=base, finetuned=cand, vector_id=CAND_SHA)
    kw = dict(
        base_dir=base,
        base_revision=BASE_SHA,
        candidate_dir=cand,
        candidate_revision=CAND_SHA,
        cache_dir=tmp_path / "cache",
    )
    return direct, kw


def _path(kw, dtype=torch.float32) -> Path:
    return cache_path(
        cache_dir=kw["cache_dir"], base_revision=BASE_SHA, candidate_revision=CAND_SHA, dtype=dtype
    )


def _flip_a_data_byte(path: Path) -> None:
    """Flip the lowest bit of the last tensor byte: the file still parses, one weight changes a little."""
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    assert len(raw) > 8 + header_len
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


def _equal(vector: TaskVector, direct: TaskVector) -> bool:
    return vector.deltas.keys() == direct.deltas.keys() and all(
        torch.equal(vector.deltas[n].float(), t) for n, t in direct.deltas.items()
    )


def test_a_cache_file_carries_the_checksum_of_its_tensors(pinned):
    direct, kw = pinned
    vector = load_vector(**kw)
    with safe_open(str(_path(kw)), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {n: fh.get_tensor(n) for n in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    assert meta[CHECKSUM_KEY] == tensors_digest(tensors) == tensors_digest(vector.deltas)
    assert _equal(vector, direct)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_flipped_byte_is_rebuilt_not_trusted(pinned, caplog, dtype):
    direct, kw = pinned
    first = load_vector(**kw, dtype=dtype)
    expected = {n: t.clone() for n, t in first.deltas.items()}
    del first
    path = _path(kw, dtype)
    _flip_a_data_byte(path)
    with caplog.at_level(logging.WARNING, logger="search.vectors.cache"):
        again = load_vector(**kw, dtype=dtype)
    assert all(torch.equal(again.deltas[n], t) for n, t in expected.items())
    warnings = [r.getMessage() for r in caplog.records if r.name == "search.vectors.cache"]
    assert warnings == [f"{path}: cached vector fails its checksum (the file was damaged); rebuilding it"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="search.vectors.cache"):
        load_vector(**kw, dtype=dtype)  # the rebuilt file passes: no second rebuild
    assert not caplog.records
    if dtype == torch.float32:
        assert _equal(again, direct)


def test_a_damaged_checksum_entry_is_rebuilt(pinned):
    direct, kw = pinned
    load_vector(**kw)
    path = _path(kw)
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    old = header["__metadata__"][CHECKSUM_KEY]
    header["__metadata__"][CHECKSUM_KEY] = ("0" if old[0] != "0" else "1") + old[1:]
    text = json.dumps(header).encode().ljust(header_len)  # same length: the offsets stay valid
    path.write_bytes(raw[:8] + text + raw[8 + header_len :])
    assert _equal(load_vector(**kw), direct)


def test_a_cache_file_without_a_checksum_is_rebuilt_with_one(pinned):
    """Files written before checksums are not trusted either: rebuilt once, checked from then on."""
    direct, kw = pinned
    path = _path(kw)
    path.parent.mkdir(parents=True)
    stale = {n: t + 1.0 for n, t in direct.deltas.items()}  # what a damaged old file could hold
    save_file(stale, str(path), metadata={"format": "pt", "vector_id": CAND_SHA})
    assert _equal(load_vector(**kw), direct)
    with safe_open(str(path), framework="pt") as fh:
        assert CHECKSUM_KEY in fh.metadata()


def test_a_damaged_file_without_its_snapshot_is_removed_with_a_clear_error(pinned):
    """A study composes from cached vectors without locating their snapshots (`Path()` as the folder):
    a damaged file then cannot be rebuilt in place, so it is removed and the error says how to recover."""
    direct, kw = pinned
    load_vector(**kw)
    path = _path(kw)
    _flip_a_data_byte(path)
    with pytest.raises(ModelError) as err:
        load_vector(**{**kw, "candidate_dir": Path()})
    message = str(err.value)
    assert message.startswith(f"{path}: cached vector fails its checksum (the file was damaged), and the ")
    assert "cccccccccccc to rebuild it from is not on disk" in message
    assert "run the command again" in message
    assert not path.exists()  # the rerun finds no cached vector, locates the snapshot and rebuilds
    assert _equal(load_vector(**kw), direct)


def test_a_file_of_another_revision_is_rebuilt_or_removed_as_a_damaged_one(pinned, caplog):
    direct, kw = pinned
    path = _path(kw)
    other = TaskVector({n: t + 1.0 for n, t in direct.deltas.items()}, vector_id="d" * 40)
    save_vector(other, path)
    with pytest.raises(
        ModelError, match=r"cached vector is of dddddddddddd, not cccccccccccc, and the snapshot"
    ):
        load_vector(**{**kw, "candidate_dir": Path()})
    assert not path.exists()
    save_vector(other, path)
    with caplog.at_level(logging.WARNING, logger="search.vectors.cache"):
        assert _equal(load_vector(**kw), direct)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: cached vector is of dddddddddddd, not cccccccccccc; rebuilding it"
    ]
