"""Is a checkpoint compatible with a base model? Cheapest checks first, each failing with a named reason.

1. config (`config.json`, a few KB): model type, architecture, every shape-defining field;
2. tokenizer (small files): same vocabulary;
3. tensors (safetensors headers only): same names and shapes after normalising tied names, no extra heads;
4. lineage (a few small byte ranges of weights): relative distance to the base below a calibrated threshold;
5. integrity (when weights are fetched): valid headers, sizes that match, no NaN/inf.

A reason reads `"<code>: <detail>"`; codes are the `REASON_*` constants and map to a status
(`STATUS_BY_CODE`). Nothing here executes checkpoint code or unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from registry.constants import (
    CONFIG_NAME,
    LINEAGE_MAX_DISTANCE,
    LINEAGE_PROBE_MAX_BYTES,
    PYTORCH_INDEX,
    PYTORCH_SINGLE,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    T5_SHARED,
    T5_TIED_ALIASES,
)
from registry.errors import ModelError, RegistryError
from registry.sources import RepoInfo, Source, validate_filename

STATUS_COMPATIBLE = "compatible"
STATUS_INCOMPATIBLE = "incompatible"
STATUS_UNVERIFIED = "unverified"
STATUS_BROKEN = "broken"
STATUSES = (STATUS_COMPATIBLE, STATUS_INCOMPATIBLE, STATUS_UNVERIFIED, STATUS_BROKEN)

REASON_CONFIG = "config_mismatch"
REASON_NOT_T5 = "not_t5"
REASON_TOKENIZER = "tokenizer_mismatch"
REASON_TENSOR = "tensor_mismatch"
REASON_LINEAGE = "lineage_mismatch"
REASON_INTEGRITY = "integrity"
REASON_PICKLE = "pickle_only"
REASON_MALFORMED = "malformed"  # a file we must read is missing or unparsable (config.json, index)

STATUS_BY_CODE = {
    REASON_CONFIG: STATUS_INCOMPATIBLE,
    REASON_NOT_T5: STATUS_INCOMPATIBLE,
    REASON_TOKENIZER: STATUS_INCOMPATIBLE,
    REASON_TENSOR: STATUS_INCOMPATIBLE,
    REASON_LINEAGE: STATUS_INCOMPATIBLE,
    REASON_INTEGRITY: STATUS_BROKEN,
    REASON_MALFORMED: STATUS_BROKEN,
    REASON_PICKLE: STATUS_UNVERIFIED,
}

# Shape-defining T5 config fields and the defaults transformers' T5Config uses when a field is absent.
SHAPE_FIELDS: dict[str, object] = {
    "d_model": 512,
    "d_ff": 2048,
    "d_kv": 64,
    "num_heads": 8,
    "num_layers": 6,
    "num_decoder_layers": None,  # defaults to num_layers
    "vocab_size": 32128,
    "feed_forward_proj": "relu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "tie_word_embeddings": True,
}
T5_ARCH_PREFIXES = ("T5",)

# Files that define the vocabulary; tokenizer_config.json etc. carry settings, not the vocabulary.
VOCAB_FILES = ("tokenizer.json", "spiece.model", "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json")

# Tensors read for lineage: the shared embedding plus one attention and one feed-forward weight per stack.
# `wo` exists in both the ReLU and the gated-GELU feed-forward, so the set is the same for every variant.
LINEAGE_PROBES = (
    T5_SHARED,
    "encoder.block.0.layer.0.SelfAttention.q.weight",
    "encoder.block.0.layer.1.DenseReluDense.wo.weight",
    "decoder.block.0.layer.0.SelfAttention.k.weight",
    "decoder.block.0.layer.2.DenseReluDense.wo.weight",
)

# safetensors dtypes: name -> (bytes per element, numpy dtype to decode as, is floating point)
_DTYPES: dict[str, tuple[int, str | None, bool]] = {
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


class Reject(Exception):
    """A check failed: `code` is one of the REASON_* codes, `detail` says what was seen."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


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


@dataclass(frozen=True)
class BaseProfile:
    """What every compatible checkpoint must match, computed once per sync from the base."""

    repo_id: str
    revision: str
    source: str
    architecture: str | None
    shape_config: Mapping[str, object]
    config_fingerprint: str
    tokenizer_fingerprint: str | None
    vocabs: Mapping[str, Mapping[str, int]]
    tensor_shapes: Mapping[str, tuple[int, ...]]
    tensor_fingerprint: str
    probes: Mapping[str, np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class CheckReport:
    """The outcome of checking one repo at one revision."""

    repo_id: str
    revision: str
    status: str
    reason: str | None
    architecture: str | None = None
    model_type: str | None = None
    config_fingerprint: str | None = None
    tokenizer_fingerprint: str | None = None
    tensor_fingerprint: str | None = None
    lineage_distance: float | None = None
    weights_verified: bool = False

    @property
    def reason_code(self) -> str | None:
        """The reason's code (`config_mismatch`, ...), or None when compatible."""
        return self.reason.split(":", 1)[0] if self.reason else None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_fingerprint(obj: object) -> str:
    return _sha(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


# --- 1. config -------------------------------------------------------------------------------------------


def parse_config(repo_id: str, raw: bytes) -> dict:
    """`config.json` as a dict.

    Raises:
        Reject: `malformed` if the JSON is invalid or not an object.
    """
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        msg = getattr(exc, "msg", str(exc))
        raise Reject(REASON_MALFORMED, f"{repo_id}/{CONFIG_NAME} is not valid JSON ({msg})") from exc
    if not isinstance(config, dict):
        raise Reject(REASON_MALFORMED, f"{repo_id}/{CONFIG_NAME} is not a JSON object")
    return config


def shape_config(config: Mapping[str, object]) -> dict[str, object]:
    """The shape-defining fields with T5Config's defaults filled in."""
    shapes = {key: config.get(key, default) for key, default in SHAPE_FIELDS.items()}
    if shapes["num_decoder_layers"] is None:
        shapes["num_decoder_layers"] = shapes["num_layers"]
    return shapes


def architecture_of(config: Mapping[str, object]) -> str | None:
    """The first entry of `architectures`, if any."""
    archs = config.get("architectures")
    if isinstance(archs, list) and archs:
        return str(archs[0])
    return None


def check_config(config: Mapping[str, object], base_shapes: Mapping[str, object]) -> dict[str, object]:
    """Check model type, architecture family and every shape-defining field against the base.

    Returns:
        The checkpoint's shape config.

    Raises:
        Reject: `not_t5` or `config_mismatch`.
    """
    model_type = config.get("model_type")
    if model_type != "t5":
        raise Reject(REASON_NOT_T5, f"model_type is {model_type!r}, not 't5'")
    archs = config.get("architectures")
    if isinstance(archs, list) and archs and not any(str(a).startswith(T5_ARCH_PREFIXES) for a in archs):
        raise Reject(REASON_NOT_T5, f"architectures {archs} are not T5")
    shapes = shape_config(config)
    diffs = [
        f"{k}={shapes[k]!r} (base {base_shapes[k]!r})" for k in SHAPE_FIELDS if shapes[k] != base_shapes[k]
    ]
    if diffs:
        raise Reject(REASON_CONFIG, ", ".join(diffs))
    return shapes


# --- 2. tokenizer ----------------------------------------------------------------------------------------


def _json_vocab(raw: bytes) -> dict[str, int] | None:
    try:
        return {str(k): int(v) for k, v in json.loads(raw).items()}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError):
        return None


def vocabs_from_files(files: Mapping[str, bytes]) -> dict[str, dict[str, int]]:
    """Token -> id maps, one per kind of vocabulary file present (`tokenizer.json`, `spiece.model`, ...).

    Kinds are kept apart because repos ship different subsets (a fine-tune with only `spiece.model` next to
    a base with `tokenizer.json` too) and the kinds differ in what they include (T5's extra ids live in
    tokenizer.json's added tokens, not in spiece.model). Unreadable files are left out.
    """
    added = _json_vocab(files["added_tokens.json"]) if "added_tokens.json" in files else {}
    vocabs: dict[str, dict[str, int]] = {}
    if "tokenizer.json" in files:
        try:
            tok = json.loads(files["tokenizer.json"])
            model_vocab = (tok.get("model") or {}).get("vocab")
            vocab: dict[str, int] = {}
            if isinstance(model_vocab, dict):
                vocab.update({str(k): int(v) for k, v in model_vocab.items()})
            elif isinstance(model_vocab, list):  # Unigram: [[piece, score], ...], id = position
                vocab.update({str(item[0]): i for i, item in enumerate(model_vocab)})
            for token in tok.get("added_tokens") or []:
                if isinstance(token, dict) and "content" in token and "id" in token:
                    vocab[str(token["content"])] = int(token["id"])
            if vocab:
                vocabs["tokenizer.json"] = vocab
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError, IndexError):
            pass
    if "spiece.model" in files:
        import sentencepiece as spm

        proc = spm.SentencePieceProcessor()
        try:
            proc.LoadFromSerializedProto(files["spiece.model"])
            vocabs["spiece.model"] = {proc.IdToPiece(i): i for i in range(proc.GetPieceSize())} | (
                added or {}
            )
        except (RuntimeError, OSError, TypeError):
            pass
    if "vocab.json" in files and (vocab := _json_vocab(files["vocab.json"])) is not None:
        vocabs["vocab.json"] = vocab | (added or {})
    if "vocab.txt" in files:
        lines = files["vocab.txt"].decode(errors="replace").splitlines()
        vocabs["vocab.txt"] = {line: i for i, line in enumerate(lines)} | (added or {})
    return vocabs


def _same_vocab(
    here: Mapping[str, Mapping[str, int]], base: Mapping[str, Mapping[str, int]]
) -> tuple[bool, str]:
    """Compare the first kind both have; with no kind in common, compare the ids both define."""
    common = [kind for kind in here if kind in base]
    if common:
        mine, theirs = here[common[0]], base[common[0]]
    else:
        mine, theirs = next(iter(here.values())), next(iter(base.values()))
        limit = min(len(mine), len(theirs))
        mine = {t: i for t, i in mine.items() if i < limit}
        theirs = {t: i for t, i in theirs.items() if i < limit}
    if mine == theirs:
        return True, ""
    only_here = len(set(mine) - set(theirs))
    only_base = len(set(theirs) - set(mine))
    moved = sum(1 for t, i in mine.items() if t in theirs and theirs[t] != i)
    return False, (
        f"different vocabulary ({len(mine)} tokens vs base {len(theirs)}; {only_here} new, "
        f"{only_base} missing, {moved} with other ids)"
    )


def tokenizer_fingerprint(files: Mapping[str, bytes]) -> str | None:
    """sha256 over the vocabulary files' hashes (None when the repo ships no tokenizer)."""
    if not files:
        return None
    return _json_fingerprint({name: _sha(data) for name, data in sorted(files.items())})


def check_tokenizer(
    files: Mapping[str, bytes],
    *,
    base_fingerprint: str | None,
    base_vocabs: Mapping[str, Mapping[str, int]],
) -> str | None:
    """Same vocabulary as the base: equal file hashes, or, when the files differ, equal token -> id maps.

    A repo without tokenizer files inherits the base's (its vocab_size already matched in the config).

    Returns:
        The tokenizer fingerprint (None if the repo has no tokenizer files).

    Raises:
        Reject: `tokenizer_mismatch`.
    """
    fingerprint = tokenizer_fingerprint(files)
    if fingerprint is None or fingerprint == base_fingerprint or not base_vocabs:
        return fingerprint
    vocabs = vocabs_from_files(files)
    if not vocabs:
        raise Reject(REASON_TOKENIZER, f"cannot read a vocabulary from {sorted(files)}")
    same, detail = _same_vocab(vocabs, base_vocabs)
    if not same:
        raise Reject(REASON_TOKENIZER, detail)
    return fingerprint


# --- 3. tensors ------------------------------------------------------------------------------------------

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
        if dtype not in _DTYPES:
            raise Reject(REASON_INTEGRITY, f"{name}: unknown dtype {dtype} for {tname}")
        if end - begin != math.prod(shape) * _DTYPES[dtype][0] or begin < 0:
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
    return _json_fingerprint(sorted((k, list(v)) for k, v in shapes.items()))


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


# --- 4. lineage ------------------------------------------------------------------------------------------


def decode(dtype: str, data: bytes) -> np.ndarray:
    """Little-endian tensor bytes as float64 (BF16 widened exactly)."""
    width, np_dtype, _ = _DTYPES[dtype]
    usable = len(data) - len(data) % width
    if dtype == "BF16":
        halves = np.frombuffer(data[:usable], dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).astype(np.float64)
    if np_dtype is None:
        raise Reject(REASON_INTEGRITY, f"dtype {dtype} cannot be decoded for the lineage check")
    return np.frombuffer(data[:usable], dtype=np_dtype).astype(np.float64)


def probe_window(entry: TensorEntry) -> tuple[int, int]:
    """(start, length) of the bytes read from a probe tensor: all of it, or a middle window of at most
    LINEAGE_PROBE_MAX_BYTES (the same elements for every checkpoint of one base, whatever the dtype)."""
    width = _DTYPES[entry.dtype][0]
    count = (entry.end - entry.start) // width
    take = min(count, LINEAGE_PROBE_MAX_BYTES // 4)
    first = (count - take) // 2
    return entry.start + first * width, take * width


def read_probes(source: Source, info: RepoInfo, layout: SafetensorsLayout) -> dict[str, np.ndarray]:
    """The probe tensors' windows, decoded to float64.

    Raises:
        Reject: `integrity` if a window is short or holds NaN/inf.
    """
    probes: dict[str, np.ndarray] = {}
    for name in LINEAGE_PROBES:
        entry = layout.tensors.get(name)
        if entry is None and name == T5_SHARED:
            entry = next((layout.tensors[a] for a in T5_TIED_ALIASES if a in layout.tensors), None)
        if entry is None:
            continue
        start, length = probe_window(entry)
        data = source.read_range(info.repo_id, info.revision, entry.file, start, length)
        if len(data) < length:
            raise Reject(REASON_INTEGRITY, f"{entry.file}: short read of {name} (file truncated?)")
        values = decode(entry.dtype, data)
        if not np.isfinite(values).all():
            raise Reject(REASON_INTEGRITY, f"{name} holds NaN or inf values")
        probes[name] = values
    return probes


def lineage_distance(probes: Mapping[str, np.ndarray], base_probes: Mapping[str, np.ndarray]) -> float:
    """||theta - theta_base|| / ||theta_base|| over the probe windows both have.

    Raises:
        Reject: `tensor_mismatch` if no probe tensor is shared with the base.
    """
    shared = [k for k in base_probes if k in probes and probes[k].shape == base_probes[k].shape]
    if not shared:
        raise Reject(REASON_TENSOR, "none of the lineage probe tensors is present")
    diff = math.sqrt(sum(float(np.sum((probes[k] - base_probes[k]) ** 2)) for k in shared))
    norm = math.sqrt(sum(float(np.sum(base_probes[k] ** 2)) for k in shared))
    return diff / norm if norm > 0 else math.inf


# --- 5. integrity of fetched weights ---------------------------------------------------------------------


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
                if not _DTYPES[entry.dtype][2]:
                    continue
                fh.seek(entry.start)
                data = fh.read(entry.end - entry.start)
                if len(data) < entry.end - entry.start:
                    raise Reject(REASON_INTEGRITY, f"{filename}: short read of {name} (file truncated?)")
                if entry.dtype.startswith("F8"):
                    continue  # no numpy decoder; header and size checks still apply
                if not np.isfinite(decode(entry.dtype, data)).all():
                    raise Reject(REASON_INTEGRITY, f"{name} holds NaN or inf values")


# --- pickled weights (only on request, and only through torch's weights_only loader) ----------------------


def load_pickled_state(source: Source, info: RepoInfo) -> dict:
    """The state dict of a pickle-only repo, loaded with `torch.load(weights_only=True)` (no code runs).

    Raises:
        Reject: `integrity` if a file is refused by the safe loader or unreadable; `malformed` for a bad index.
    """
    import pickle

    import torch

    if PYTORCH_SINGLE in info.files:
        files = [PYTORCH_SINGLE]
    else:
        try:
            index = json.loads(source.read_file(info.repo_id, info.revision, PYTORCH_INDEX))
            files = sorted(set(index["weight_map"].values()))
            for name in files:
                validate_filename(info.repo_id, name)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise Reject(REASON_MALFORMED, f"{PYTORCH_INDEX} is not a valid index") from exc
        except RegistryError as exc:
            raise Reject(REASON_MALFORMED, str(exc)) from exc
    state: dict = {}
    for name in files:
        path = source.file_path(info.repo_id, info.revision, name)
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise Reject(REASON_INTEGRITY, f"{name}: not loadable with weights_only=True ({first})") from exc
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise Reject(REASON_INTEGRITY, f"{name}: not a state dict of tensors")
        state.update(loaded)
    return state


def probes_from_state(state: Mapping) -> dict[str, np.ndarray]:
    """The same probe windows as `read_probes`, from tensors in memory.

    Raises:
        Reject: `integrity` if a probe holds NaN/inf.
    """
    probes: dict[str, np.ndarray] = {}
    for name in LINEAGE_PROBES:
        tensor = state.get(name)
        if tensor is None and name == T5_SHARED:
            tensor = next((state[a] for a in T5_TIED_ALIASES if a in state), None)
        if tensor is None:
            continue
        flat = tensor.detach().reshape(-1)
        take = min(flat.numel(), LINEAGE_PROBE_MAX_BYTES // 4)
        first = (flat.numel() - take) // 2
        values = flat[first : first + take].double().numpy()
        if not np.isfinite(values).all():
            raise Reject(REASON_INTEGRITY, f"{name} holds NaN or inf values")
        probes[name] = values
    return probes


def _check_lineage(distance: float, info: RepoInfo, base: BaseProfile) -> None:
    if not distance <= LINEAGE_MAX_DISTANCE:
        claim = f"; card claims base_model={list(info.card.base_model)}" if info.card.base_model else ""
        raise Reject(
            REASON_LINEAGE,
            f"relative distance {distance:.3f} to {base.repo_id} > {LINEAGE_MAX_DISTANCE} "
            f"(not a descendant){claim}",
        )


def torch_isfinite_all(tensor) -> bool:
    """Whether every element of a tensor is finite."""
    import torch

    return bool(torch.isfinite(tensor).all())


# --- the pipeline ----------------------------------------------------------------------------------------


def _vocab_files(source: Source, info: RepoInfo) -> dict[str, bytes]:
    return {
        name: source.read_file(info.repo_id, info.revision, name)
        for name in VOCAB_FILES
        if name in info.files
    }


def profile_base(source: Source, info: RepoInfo) -> BaseProfile:
    """Everything a checkpoint is compared with, read from the base repo (config, tokenizer, headers, probes).

    Raises:
        ModelError: if the base itself is not a readable T5 safetensors checkpoint.
    """
    try:
        if CONFIG_NAME not in info.files:
            raise Reject(REASON_MALFORMED, f"no {CONFIG_NAME}")
        config = parse_config(info.repo_id, source.read_file(info.repo_id, info.revision, CONFIG_NAME))
        if config.get("model_type") != "t5":
            raise Reject(REASON_NOT_T5, f"model_type is {config.get('model_type')!r}, not 't5'")
        shapes_cfg = shape_config(config)
        vocab_files = _vocab_files(source, info)
        layout = read_layout(source, info)
        if layout is None:
            raise Reject(REASON_PICKLE, "the base has no safetensors weights")
        tensor_shapes = normalized_shapes(layout, tied=bool(shapes_cfg["tie_word_embeddings"]))
        probes = read_probes(source, info, layout)
    except Reject as exc:
        raise ModelError(f"base {info.repo_id}@{info.revision[:12]}: {exc}") from exc
    return BaseProfile(
        repo_id=info.repo_id,
        revision=info.revision,
        source=source.name,
        architecture=architecture_of(config),
        shape_config=shapes_cfg,
        config_fingerprint=_json_fingerprint(shapes_cfg),
        tokenizer_fingerprint=tokenizer_fingerprint(vocab_files),
        vocabs=vocabs_from_files(vocab_files),
        tensor_shapes=tensor_shapes,
        tensor_fingerprint=tensor_fingerprint(tensor_shapes),
        probes=probes,
    )


def check_repo(
    source: Source,
    info: RepoInfo,
    base: BaseProfile,
    *,
    verify_weights: bool = True,
    verify_pickles: bool = False,
) -> CheckReport:
    """Run the checks on one repo, cheapest first, stopping at the first failure.

    Args:
        source: where the repo lives.
        info: the repo pinned to a revision.
        base: the base's profile.
        verify_weights: fetch the weights of repos that pass checks 1-4 and scan them (check 5); the
            download is what screening needs anyway (cached by the source).
        verify_pickles: download pickle-only weights and check them (loaded with weights_only=True);
            otherwise such repos stay `unverified`.

    Returns:
        The report; `status` is `compatible` only if every check passed.

    Raises:
        RegistryError: for transient failures (network, rate limits) that must not be recorded as a verdict.
    """
    found: dict[str, object] = {}

    def report(status: str, reason: str | None) -> CheckReport:
        return CheckReport(
            repo_id=info.repo_id, revision=info.revision, status=status, reason=reason, **found
        )

    try:
        if CONFIG_NAME not in info.files:
            raise Reject(REASON_MALFORMED, f"no {CONFIG_NAME} in the repo")
        config = parse_config(info.repo_id, source.read_file(info.repo_id, info.revision, CONFIG_NAME))
        found["model_type"] = str(config.get("model_type")) if config.get("model_type") is not None else None
        found["architecture"] = architecture_of(config)
        shapes_cfg = check_config(config, base.shape_config)
        found["config_fingerprint"] = _json_fingerprint(shapes_cfg)

        found["tokenizer_fingerprint"] = check_tokenizer(
            _vocab_files(source, info), base_fingerprint=base.tokenizer_fingerprint, base_vocabs=base.vocabs
        )

        layout = read_layout(source, info)
        tied = bool(shapes_cfg["tie_word_embeddings"])
        if layout is None:
            if PYTORCH_SINGLE not in info.files and PYTORCH_INDEX not in info.files:
                raise Reject(REASON_MALFORMED, "no weights (neither safetensors nor pytorch_model.bin)")
            if not verify_pickles:
                raise Reject(
                    REASON_PICKLE,
                    f"only {PYTORCH_SINGLE} (pickle): shapes and lineage unchecked until downloaded "
                    "and read with weights_only=True",
                )
            state = load_pickled_state(source, info)
            shapes = normalized_shapes({k: tuple(v.shape) for k, v in state.items()}, tied=tied)
            found["tensor_fingerprint"] = tensor_fingerprint(shapes)
            check_tensors(shapes, base.tensor_shapes)
            found["lineage_distance"] = distance = lineage_distance(probes_from_state(state), base.probes)
            _check_lineage(distance, info, base)
            for name, tensor in state.items():
                if tensor.is_floating_point() and not bool(torch_isfinite_all(tensor)):
                    raise Reject(REASON_INTEGRITY, f"{name} holds NaN or inf values")
            found["weights_verified"] = True
            return report(STATUS_COMPATIBLE, None)
        shapes = normalized_shapes(layout, tied=tied)
        found["tensor_fingerprint"] = tensor_fingerprint(shapes)
        check_tensors(shapes, base.tensor_shapes)

        distance = lineage_distance(read_probes(source, info, layout), base.probes)
        found["lineage_distance"] = distance
        _check_lineage(distance, info, base)

        if verify_weights:
            scan_weights(source, info, layout)
            found["weights_verified"] = True
    except Reject as exc:
        return report(STATUS_BY_CODE[exc.code], str(exc))
    return report(STATUS_COMPATIBLE, None)
