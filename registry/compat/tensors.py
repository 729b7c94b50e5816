"""Check 3, tensors (safetensors headers only): same names and shapes after normalising tied names, no
extra heads; and check 5, the integrity of fetched weights (valid headers, sizes that match, no NaN/inf).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from registry.compat.verdicts import (
    REASON_INTEGRITY,
    REASON_MALFORMED,
    REASON_TENSOR,
    Reject,
    json_fingerprint,
)
from registry.constants import (
    CONFIG_NAME,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    T5_SHARED,
    T5_TIED_ALIASES,
)
from registry.errors import RegistryError
from registry.sources import RepoInfo, Source, validate_filename

# safetensors dtypes: name -> (bytes per element, numpy dtype to decode as, is floating point)
DTYPES: dict[str, tuple[int, str | None, bool]] = {
    "F64": (8, "<f8", True),
    "F32": (4, "<f4", True),
    "F16": (2, "<f2", True),
    "BF16": (2, None, True),
    "I64": (8, "<i8", False),
    "I32": (4, "<i4", False),
    "I16": (2, "<i2", False),
    "I8": (1, "<i1", False),
    "U8": (1, "<u1", False),
    "BOOL": (1, "<u1", False),
    "F8_E4M3": (1, None, True),
    "F8_E5M2": (1, None, True),
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are (absolute offsets in `file`)."""

    file: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsLayout:
    """All tensors of a checkpoint (single file or shards), read from headers only."""

    tensors: Mapping[str, TensorEntry]
    header_bytes: int
    weight_bytes: int


ReadRange = Callable[[int, int], bytes]


def parse_safetensors_header(name: str, read_range: ReadRange, size: int | None) -> SafetensorsLayout:
    """Read a safetensors header through `read_range(start, length)` (two small reads, no tensor data).

    Args:
        name: file name, for messages and `TensorEntry.file`.
        read_range: reads bytes of the file.
        size: the file's size if known; checked against the header's offsets.

    Returns:
        The tensors with absolute byte offsets.

    Raises:
        Reject: `integrity` for a truncated or invalid header, or offsets that do not fit the file.
    """
    head = read_range(0, 8)
    if len(head) < 8:
        raise Reject(REASON_INTEGRITY, f"{name}: truncated safetensors header ({len(head)} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n == 0 or n > _MAX_HEADER or (size is not None and 8 + n > size):
        raise Reject(REASON_INTEGRITY, f"{name}: header length {n} does not fit the file ({size} bytes)")
    raw = read_range(8, n)
    if len(raw) < n:
        raise Reject(REASON_INTEGRITY, f"{name}: truncated safetensors header ({len(raw)} of {n} bytes)")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Reject(REASON_INTEGRITY, f"{name}: safetensors header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise Reject(REASON_INTEGRITY, f"{name}: safetensors header is not a JSON object")
    data_start = 8 + n
    tensors: dict[str, TensorEntry] = {}
    spans: list[tuple[int, int]] = []
    for tname, meta in header.items():
        if tname == "__metadata__":
            continue
        try:
            dtype = meta["dtype"]
            shape = tuple(int(d) for d in meta["shape"])
            begin, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Reject(REASON_INTEGRITY, f"{name}: bad header entry for {tname}") from exc
        if dtype not in DTYPES:
            raise Reject(REASON_INTEGRITY, f"{name}: unknown dtype {dtype} for {tname}")
        if end - begin != math.prod(shape) * DTYPES[dtype][0] or begin < 0:
            raise Reject(REASON_INTEGRITY, f"{name}: {tname} offsets do not match its shape and dtype")
        tensors[tname] = TensorEntry(name, dtype, shape, data_start + begin, data_start + end)
        spans.append((begin, end))
    data_len = max((e for _, e in spans), default=0)
    if size is not None and data_start + data_len != size:
        raise Reject(
            REASON_INTEGRITY,
            f"{name}: file is {size} bytes but its header describes {data_start + data_len} (truncated?)",
        )
    return SafetensorsLayout(tensors=tensors, header_bytes=data_start, weight_bytes=data_len)


def read_layout(source: Source, info: RepoInfo) -> SafetensorsLayout | None:
    """The checkpoint's tensors from its safetensors header(s); None if it has no safetensors weights.

    Raises:
        Reject: `integrity` (bad header) or `malformed` (bad index).
    """
    files = info.files

    def reader(filename: str) -> ReadRange:
        return lambda start, length: source.read_range(info.repo_id, info.revision, filename, start, length)

    if SAFETENSORS_SINGLE in files:
        return parse_safetensors_header(
            SAFETENSORS_SINGLE, reader(SAFETENSORS_SINGLE), files[SAFETENSORS_SINGLE]
        )
    if SAFETENSORS_INDEX not in files:
        return None
    try:
        index = json.loads(source.read_file(info.repo_id, info.revision, SAFETENSORS_INDEX))
        shards = sorted(set(index["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise Reject(REASON_MALFORMED, f"{SAFETENSORS_INDEX} is not a valid index") from exc
    tensors: dict[str, TensorEntry] = {}
    header_bytes = weight_bytes = 0
    for shard in shards:
        try:
            validate_filename(info.repo_id, shard)
        except RegistryError as exc:
            raise Reject(REASON_MALFORMED, str(exc)) from exc
        if shard not in files:
            raise Reject(REASON_INTEGRITY, f"{SAFETENSORS_INDEX} names a missing shard {shard}")
        layout = parse_safetensors_header(shard, reader(shard), files[shard])
        tensors.update(layout.tensors)
        header_bytes += layout.header_bytes
        weight_bytes += layout.weight_bytes
    return SafetensorsLayout(tensors=tensors, header_bytes=header_bytes, weight_bytes=weight_bytes)


def normalized_shapes(
    layout: SafetensorsLayout | Mapping[str, tuple[int, ...]], *, tied: bool
) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, with tied aliases of `shared.weight` dropped (savers differ in which they keep)."""
    if isinstance(layout, SafetensorsLayout):
        shapes = {name: entry.shape for name, entry in layout.tensors.items()}
    else:
        shapes = dict(layout)
    aliases = T5_TIED_ALIASES if tied else T5_TIED_ALIASES[:2]  # untied lm_head is a real tensor
    present = [a for a in aliases if a in shapes]
    if T5_SHARED not in shapes and present:
        shapes[T5_SHARED] = shapes[present[0]]
    for alias in present:
        shapes.pop(alias)
    return shapes


def tensor_fingerprint(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """sha256 over the sorted (name, shape) pairs."""
    return json_fingerprint(sorted((k, list(v)) for k, v in shapes.items()))


def check_tensors(shapes: Mapping[str, tuple[int, ...]], base_shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Same tensor names and shapes as the base (no extra heads, nothing missing).

    Raises:
        Reject: `tensor_mismatch` naming the first few differences.
    """
    extra = sorted(set(shapes) - set(base_shapes))
    missing = sorted(set(base_shapes) - set(shapes))
    reshaped = sorted(k for k in set(shapes) & set(base_shapes) if shapes[k] != base_shapes[k])
    parts = []
    if extra:
        parts.append(f"{len(extra)} extra ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
    if missing:
        parts.append(
            f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} reshaped ({k} {list(shapes[k])} vs base {list(base_shapes[k])})")
    if parts:
        raise Reject(REASON_TENSOR, "; ".join(parts))


_BLOCK = re.compile(r"(encoder|decoder)\.block\.(\d+)\.")


def _expected_shapes(config: Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    """A few tensors whose shapes a T5 config fixes: together they pin every integer shape field."""
    d_model, inner = int(config["d_model"]), int(config["num_heads"]) * int(config["d_kv"])
    attention = "encoder.block.0.layer.0.SelfAttention"
    expected = {
        T5_SHARED: (int(config["vocab_size"]), d_model),
        f"{attention}.q.weight": (inner, d_model),
        f"{attention}.relative_attention_bias.weight": (
            int(config["relative_attention_num_buckets"]),
            int(config["num_heads"]),
        ),
        "encoder.block.0.layer.1.DenseReluDense.wo.weight": (d_model, int(config["d_ff"])),
    }
    if config["tie_word_embeddings"] is False:
        expected["lm_head.weight"] = (int(config["vocab_size"]), d_model)
    return expected


def check_layout_config(shapes: Mapping[str, tuple[int, ...]], config: Mapping[str, object]) -> None:
    """The weights hold what the config describes: as many blocks, and the shapes its fields imply.

    A model is built from its config before its weights are loaded, so a config that promises more than
    the weights hold would allocate (and randomly initialise) what no file backs.

    Args:
        shapes: tensor name -> shape, tied aliases normalised (`normalized_shapes`).
        config: the shape config (`shape_config`), its types already checked.

    Raises:
        Reject: `tensor_mismatch` naming the config field and what the weights hold.
    """
    blocks = {"encoder": set(), "decoder": set()}
    for name in shapes:
        if (match := _BLOCK.match(name)) is not None:
            blocks[match.group(1)].add(int(match.group(2)))
    for stack, key in (("encoder", "num_layers"), ("decoder", "num_decoder_layers")):
        held, want = blocks[stack], config[key]
        if held != set(range(int(want))):
            what = (
                f"{len(held)} {stack} blocks" if len(held) != want else f"{stack} blocks {sorted(held)[:5]}"
            )
            raise Reject(REASON_TENSOR, f"{CONFIG_NAME} says {key}={want} but the weights hold {what}")
    if T5_SHARED not in shapes:
        raise Reject(REASON_TENSOR, f"the weights hold no token embedding ({T5_SHARED})")
    for name, want in _expected_shapes(config).items():
        if name in shapes and tuple(shapes[name]) != want:
            raise Reject(
                REASON_TENSOR, f"{name} is {list(shapes[name])} but {CONFIG_NAME} implies {list(want)}"
            )


def decode(dtype: str, data: bytes) -> np.ndarray:
    """Little-endian tensor bytes as float64 (BF16 widened exactly)."""
    width, np_dtype, _ = DTYPES[dtype]
    usable = len(data) - len(data) % width
    if dtype == "BF16":
        halves = np.frombuffer(data[:usable], dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).astype(np.float64)
    if np_dtype is None:
        raise Reject(REASON_INTEGRITY, f"dtype {dtype} cannot be decoded for the lineage check")
    return np.frombuffer(data[:usable], dtype=np_dtype).astype(np.float64)


def scan_weights(source: Source, info: RepoInfo, layout: SafetensorsLayout) -> None:
    """Read every floating-point tensor of the (fetched) weights and refuse NaN/inf.

    Raises:
        Reject: `integrity` naming the first bad tensor or a short file.
    """
    by_file: dict[str, list[tuple[str, TensorEntry]]] = {}
    for name, entry in layout.tensors.items():
        by_file.setdefault(entry.file, []).append((name, entry))
    for filename, entries in by_file.items():
        path = source.file_path(info.repo_id, info.revision, filename)
        with path.open("rb") as fh:
            for name, entry in sorted(entries, key=lambda item: item[1].start):
                if not DTYPES[entry.dtype][2]:
                    continue
                fh.seek(entry.start)
                data = fh.read(entry.end - entry.start)
                if len(data) < entry.end - entry.start:
                    raise Reject(REASON_INTEGRITY, f"{filename}: short read of {name} (file truncated?)")
                if entry.dtype.startswith("F8"):
                    continue  # no numpy decoder; header and size checks still apply
                if not np.isfinite(decode(entry.dtype, data)).all():
                    raise Reject(REASON_INTEGRITY, f"{name} holds NaN or inf values")
