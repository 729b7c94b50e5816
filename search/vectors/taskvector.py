"""Task vectors (tau = theta_finetuned - theta_base) and the composer that applies them to a live model.

A `TaskVector` holds fp32 deltas keyed by *canonical* tensor names: T5's token embedding is one tensor
however a checkpoint spells it (`shared`, `encoder.embed_tokens`, `decoder.embed_tokens`, and `lm_head`
when the embeddings are tied), so tied weights are counted and updated once (invariant 3). An untied
`lm_head` (T5 v1.1 / FLAN: `tie_word_embeddings: false`) is its own tensor.

Checkpoints are read lazily, tensor by tensor, from safetensors (`model.safetensors` or shards through
`model.safetensors.index.json`); pickle-only checkpoints are read with `torch.load(weights_only=True)` and
nothing else. Non-float tensors are skipped.

The `Composer` is the search's hot path: it keeps the target's weights and the K vectors as contiguous
buffers and, for each coefficient vector, rewrites the model's parameters in place as
`theta = theta_T + combine({tau_i}, {lambda_i})`, recomputed from `theta_T` every time (no drift), in
cache-sized chunks so each chunk of the output stays in cache while the vectors stream past it once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from registry.constants import (
    CONFIG_NAME,
    PYTORCH_INDEX,
    PYTORCH_SINGLE,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    vector_cache_dir,
)
from registry.errors import ModelError

EMBEDDING = "shared.weight"
LM_HEAD = "lm_head.weight"
_EMBED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# Config fields that must agree for two T5 checkpoints to be subtracted or combined.
_ARCH_KEYS = (
    "model_type",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "vocab_size",
    "feed_forward_proj",
    "relative_attention_num_buckets",
)
_FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_SAFE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
# Elements per chunk of the composer: 256K fp32 = 1 MiB, which stays in L2 while K vectors stream past.
CHUNK = 1 << 18


# --- reading checkpoints ------------------------------------------------------------------------------


def read_config(folder: Path) -> dict[str, Any]:
    """The checkpoint's `config.json` as a dict.

    Raises:
        ModelError: if it is missing or malformed.
    """
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{folder}: no {CONFIG_NAME}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path}: not a JSON object")
    return config


def architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config fields that fix tensor shapes and meaning (T5 defaults filled in)."""
    arch = {k: config.get(k) for k in _ARCH_KEYS}
    if arch["num_decoder_layers"] is None:
        arch["num_decoder_layers"] = arch["num_layers"]
    if arch["feed_forward_proj"] is None:
        arch["feed_forward_proj"] = "relu"
    if arch["relative_attention_num_buckets"] is None:
        arch["relative_attention_num_buckets"] = 32
    return arch


def check_same_architecture(a: Path, b: Path, *, what: str = "base") -> None:
    """Raise unless the checkpoints in folders `a` and `b` have the same architecture.

    Raises:
        ModelError: naming the first differing config field.
    """
    arch_a, arch_b = architecture(read_config(a)), architecture(read_config(b))
    if arch_a["model_type"] != "t5":
        raise ModelError(f"{a}: model_type is {arch_a['model_type']!r}, not 't5'")
    for key in _ARCH_KEYS:
        if arch_a[key] != arch_b[key]:
            raise ModelError(
                f"{b}: does not match the {what} {a} (config {key}: {arch_b[key]!r} vs {arch_a[key]!r})"
            )


class Checkpoint:
    """Lazy access to a checkpoint folder's float tensors under canonical names.

    Args:
        folder: a model folder (config.json + safetensors, sharded or not, or a pickle as last resort).

    Raises:
        ModelError: if the folder has no weights or a weight file is unreadable.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.config = read_config(self.folder)
        self._handles: dict[Path, Any] = {}
        self._pickles: dict[Path, dict[str, torch.Tensor]] = {}
        self.key_file: dict[str, Path] = {}
        self.pickle = False
        single, index = self.folder / SAFETENSORS_SINGLE, self.folder / SAFETENSORS_INDEX
        if single.is_file():
            self._add_safetensors(single)
        elif index.is_file():
            for shard in sorted(set(self._weight_map(index).values())):
                self._add_safetensors(self._shard(index, shard))
        elif (self.folder / PYTORCH_SINGLE).is_file() or (self.folder / PYTORCH_INDEX).is_file():
            self.pickle = True
            if (self.folder / PYTORCH_SINGLE).is_file():
                files = [self.folder / PYTORCH_SINGLE]
            else:
                idx = self.folder / PYTORCH_INDEX
                files = [self._shard(idx, s) for s in sorted(set(self._weight_map(idx).values()))]
            for path in files:
                self._add_pickle(path)
        else:
            raise ModelError(
                f"{self.folder}: no weights ({SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX} or a pickle)"
            )
        self.untied_lm_head = self._untied()
        self.names = self._canonical_names()

    def _weight_map(self, index: Path) -> dict[str, str]:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelError(f"{index}: malformed index (no weight_map)") from exc
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelError(f"{index}: empty weight_map")
        return weight_map

    def _shard(self, index: Path, name: str) -> Path:
        path = (self.folder / name).resolve()
        if not isinstance(name, str) or "/" in name or "\\" in name or path.parent != self.folder.resolve():
            raise ModelError(f"{index}: unsafe shard name {name!r}")
        if not path.is_file():
            raise ModelError(f"{index}: shard {name} is missing")
        return path

    def _add_safetensors(self, path: Path) -> None:
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), framework="pt")
            keys = list(handle.keys())
            dtypes = {k: handle.get_slice(k).get_dtype() for k in keys}
        except Exception as exc:  # safetensors raises its own error type for truncated/corrupt headers
            raise ModelError(f"{path}: unreadable safetensors ({str(exc).splitlines()[0]})") from exc
        self._handles[path] = handle
        for key in keys:
            if dtypes[key] in _FLOAT_DTYPES:
                self.key_file[key] = path

    def _add_pickle(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses anything that is not plain tensors
            raise ModelError(f"{path}: unreadable pickle checkpoint ({str(exc).splitlines()[0]})") from exc
        if not isinstance(state, dict):
            raise ModelError(f"{path}: pickle checkpoint is not a state dict")
        self._pickles[path] = state
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                self.key_file[key] = path

    def raw(self, key: str) -> torch.Tensor:
        """The tensor stored under `key` in the files (no canonical renaming).

        Raises:
            ModelError: if the stored bytes cannot be read (truncated file).
        """
        path = self.key_file[key]
        if path in self._pickles:
            return self._pickles[path][key]
        try:
            return self._handles[path].get_tensor(key)
        except Exception as exc:
            raise ModelError(f"{path}: cannot read tensor {key} ({str(exc).splitlines()[0]})") from exc

    def _embedding_key(self) -> str | None:
        return next((k for k in _EMBED_ALIASES if k in self.key_file), None)

    def _untied(self) -> bool:
        if self.config.get("tie_word_embeddings", True) is False:
            if LM_HEAD not in self.key_file:
                raise ModelError(f"{self.folder}: config unties lm_head but the weights have no {LM_HEAD}")
            return True
        emb = self._embedding_key()
        # transformers unties a checkpoint whose lm_head differs from the embedding; follow what loads.
        return (
            LM_HEAD in self.key_file and emb is not None and not torch.equal(self.raw(LM_HEAD), self.raw(emb))
        )

    def _canonical_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        emb = self._embedding_key()
        for key in self.key_file:
            if key in _EMBED_ALIASES or (key == LM_HEAD and not self.untied_lm_head):
                if key == emb:
                    names[EMBEDDING] = key
                continue
            names[key] = key
        return names

    def get(self, name: str) -> torch.Tensor:
        """The tensor of canonical name `name`.

        Raises:
            ModelError: if the checkpoint has no such tensor or it cannot be read.
        """
        key = self.names.get(name)
        if key is None:
            raise ModelError(f"{self.folder}: missing tensor {name}")
        return self.raw(key)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of canonical tensor `name` without reading its data."""
        key = self.names[name]
        path = self.key_file[key]
        if path in self._pickles:
            return tuple(self._pickles[path][key].shape)
        return tuple(self._handles[path].get_slice(key).get_shape())


def _check_finite(tensor: torch.Tensor, *, where: str, name: str) -> None:
    if not torch.isfinite(tensor).all():
        raise ModelError(f"{where}: tensor {name} has NaN/inf values")


def _safe_key(revision: str) -> str:
    """A revision usable in a file name: hex shas as they are, anything else hashed."""
    return (
        revision
        if re.fullmatch(r"[0-9a-fA-F]{7,64}", revision)
        else hashlib.sha1(revision.encode()).hexdigest()
    )


# --- task vectors ----------------------------------------------------------------------------------------


class TaskVector:
    """Per-tensor deltas tau = theta_finetuned - theta_base, keyed by canonical tensor name.

    Args:
        deltas: canonical name -> delta tensor (fp32, or bf16 when loaded from a bf16 cache).
        vector_id: identity of the fine-tuned checkpoint (its revision); seeds DARE's masks, so a
            vector's masks do not depend on which other vectors it is combined with.

    Arithmetic returns new fp32 vectors: `a + b`, `a - b`, `-a`, `2.0 * a`, `sum([a, b])`, and the
    analogy `c + (b - a)`.
    """

    def __init__(self, deltas: Mapping[str, torch.Tensor], *, vector_id: str = "") -> None:
        self.deltas = dict(deltas)
        self.vector_id = vector_id

    # construction

    @classmethod
    def from_checkpoints(cls, *, base: Path, finetuned: Path, vector_id: str | None = None) -> TaskVector:
        """tau = finetuned - base, computed in fp32 tensor by tensor.

        Args:
            base: the pretrained checkpoint folder.
            finetuned: the fine-tuned checkpoint folder.
            vector_id: identity recorded on the vector (default: the folder's content sha).

        Returns:
            The task vector.

        Raises:
            ModelError: configs that differ, a missing or extra tensor, mismatched shapes, NaN/inf,
                or an unreadable weight file; the message names the folder and tensor.
        """
        base, finetuned = Path(base), Path(finetuned)
        check_same_architecture(base, finetuned)
        b, f = Checkpoint(base), Checkpoint(finetuned)
        if b.untied_lm_head != f.untied_lm_head:
            raise ModelError(
                f"{finetuned}: lm_head is {'untied' if f.untied_lm_head else 'tied'} but "
                f"{'untied' if b.untied_lm_head else 'tied'} in the base {base}"
            )
        missing = sorted(set(b.names) - set(f.names))
        if missing:
            raise ModelError(f"{finetuned}: missing tensor {missing[0]} (present in the base)")
        extra = sorted(set(f.names) - set(b.names))
        if extra:
            raise ModelError(f"{finetuned}: extra tensor {extra[0]} (not in the base)")
        deltas: dict[str, torch.Tensor] = {}
        for name in sorted(b.names):
            if b.shape(name) != f.shape(name):
                raise ModelError(
                    f"{finetuned}: tensor {name} has shape {list(f.shape(name))}, base has {list(b.shape(name))}"
                )
            tb = b.get(name).to(torch.float32)
            tf = f.get(name).to(torch.float32)
            _check_finite(tb, where=str(base), name=name)
            _check_finite(tf, where=str(finetuned), name=name)
            deltas[name] = (tf - tb).contiguous()
        if vector_id is None:
            from registry.sources.local import content_sha

            vector_id = content_sha(finetuned)
        return cls(deltas, vector_id=vector_id)

    # inspection

    def __len__(self) -> int:
        return len(self.deltas)

    def keys(self) -> list[str]:
        """Canonical tensor names."""
        return list(self.deltas)

    @property
    def numel(self) -> int:
        """Number of scalar entries."""
        return sum(t.numel() for t in self.deltas.values())

    def _check_compatible(self, other: TaskVector) -> None:
        if set(self.deltas) != set(other.deltas):
            diff = sorted(set(self.deltas) ^ set(other.deltas))
            raise ModelError(f"task vectors differ in tensors (e.g. {diff[0]})")
        for name, t in self.deltas.items():
            if t.shape != other.deltas[name].shape:
                raise ModelError(
                    f"task vectors differ in shape of {name}: {list(t.shape)} vs {list(other.deltas[name].shape)}"
                )

    # arithmetic (always fp32 results)

    def _combine(self, other: TaskVector, alpha: float) -> TaskVector:
        self._check_compatible(other)
        return TaskVector(
            {n: t.float().add(other.deltas[n].float(), alpha=alpha) for n, t in self.deltas.items()}
        )

    def __add__(self, other: TaskVector) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self._combine(other, 1.0)

    def __radd__(self, other: object) -> TaskVector:
        if isinstance(other, (int, float)) and other == 0:  # builtin sum() starts from 0
            return self * 1.0
        return NotImplemented

    def __sub__(self, other: TaskVector) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self._combine(other, -1.0)

    def __neg__(self) -> TaskVector:
        return self * -1.0

    def __mul__(self, scalar: float) -> TaskVector:
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        return TaskVector(
            {n: t.float() * float(scalar) for n, t in self.deltas.items()}, vector_id=self.vector_id
        )

    __rmul__ = __mul__

    @staticmethod
    def sum(vectors: Iterable[TaskVector]) -> TaskVector:
        """Sum of vectors (fp32).

        Raises:
            ModelError: for an empty sequence or vectors over different tensors.
        """
        vectors = list(vectors)
        if not vectors:
            raise ModelError("sum of no task vectors")
        out = TaskVector({n: t.float().clone() for n, t in vectors[0].deltas.items()})
        for v in vectors[1:]:
            out._check_compatible(v)
            for n, t in out.deltas.items():
                t.add_(v.deltas[n].float())
        return out

    def dot(self, other: TaskVector) -> float:
        """Inner product over all entries (fp64 accumulation)."""
        self._check_compatible(other)
        return float(
            sum(
                torch.dot(t.double().flatten(), other.deltas[n].double().flatten())
                for n, t in self.deltas.items()
            )
        )

    def norm(self) -> float:
        """Euclidean norm over all entries."""
        return math.sqrt(sum(float(t.double().square().sum()) for t in self.deltas.values()))

    def cosine(self, other: TaskVector) -> float:
        """Cosine similarity of the flattened vectors (0.0 when either is zero)."""
        denom = self.norm() * other.norm()
        return self.dot(other) / denom if denom > 0 else 0.0

    # application

    def apply_to(self, model: torch.nn.Module, coefficient: float = 1.0) -> None:
        """Add `coefficient * tau` to the model's parameters in place (tied embeddings once).

        Raises:
            ModelError: if the model's parameters do not match the vector's tensors.
        """
        params = model_parameters(model)
        _check_keys(params, self.deltas, what="task vector")
        with torch.no_grad():
            for name, delta in self.deltas.items():
                param = params[name]
                if param.shape != delta.shape:
                    raise ModelError(
                        f"task vector: {name} has shape {list(delta.shape)}, model has {list(param.shape)}"
                    )
                param.add_(delta.to(param.dtype), alpha=float(coefficient))


def analogy(*, a: TaskVector, b: TaskVector, c: TaskVector) -> TaskVector:
    """`c + (b - a)`: "a is to b as c is to ?" (Ilharco et al., section 5)."""
    return c + (b - a)


def model_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The model's distinct parameters under canonical names (a tied embedding appears once)."""
    seen: dict[int, str] = {}
    out: dict[str, torch.nn.Parameter] = {}
    emb = None
    get_emb = getattr(model, "get_input_embeddings", None)
    if callable(get_emb):
        emb = get_emb().weight
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        canonical = EMBEDDING if (param is emb or name in _EMBED_ALIASES) else name
        seen[id(param)] = canonical
        out[canonical] = param
    return out


def _check_keys(params: Mapping[str, Any], deltas: Mapping[str, Any], *, what: str) -> None:
    missing = sorted(set(deltas) - set(params))
    if missing:
        raise ModelError(f"{what}: tensor {missing[0]} has no parameter in the model")
    uncovered = sorted(set(params) - set(deltas))
    if uncovered:
        raise ModelError(f"{what}: model parameter {uncovered[0]} is not in the vector")


# --- the vector cache ------------------------------------------------------------------------------------


def cache_path(*, cache_dir: Path, base_revision: str, candidate_revision: str, dtype: torch.dtype) -> Path:
    """Where the vector of (base, candidate) at `dtype` lives in `cache_dir`."""
    suffix = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    return (
        Path(cache_dir) / _safe_key(base_revision) / f"{_safe_key(candidate_revision)}.{suffix}.safetensors"
    )


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
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "vector_id": vector.vector_id, **(metadata or {})}
    tensors = {n: t.to(dtype).contiguous() for n, t in vector.deltas.items()}
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
        ModelError: if the file is truncated or malformed.
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
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, struct.error) as exc:
        raise ModelError(f"{path}: unreadable cached vector ({exc})") from exc
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
    a miss is computed in fp32, written atomically and then memory-mapped. A corrupt cache file is
    recomputed.

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
        ModelError: if the candidate does not match the base (see `TaskVector.from_checkpoints`).
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
        except ModelError:
            pass  # a damaged entry is rebuilt below
    vector = TaskVector.from_checkpoints(base=base_dir, finetuned=candidate_dir, vector_id=candidate_revision)
    save_vector(
        vector,
        path,
        dtype=dtype,
        metadata={"base_revision": base_revision, "candidate_revision": candidate_revision},
    )
    return mmap_vector(path)


# --- composition on a live model -------------------------------------------------------------------------


def _target_tensors(
    target: Path | Mapping[str, torch.Tensor], names: Iterable[str]
) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(target, Mapping):
        canon = {EMBEDDING if k in _EMBED_ALIASES else k: v for k, v in target.items()}
        for name in names:
            if name not in canon:
                raise ModelError(f"target state dict: missing tensor {name}")
            yield name, canon[name]
        return
    ckpt = Checkpoint(Path(target))
    for name in names:
        yield name, ckpt.get(name)


class Composer:
    """Rewrites a live model's parameters to theta_T + combine(tau_1..tau_K; lambda) for each new lambda.

    The target's weights are copied once into fp32 buffers; the vectors stay where they are (RAM or a
    memory-mapped cache) after the method's coefficient-independent preparation (TIES trimming, DARE
    masks). `apply` writes every parameter from scratch in chunks: copy theta_T, add each lambda_i tau_i,
    one pass over memory, no allocation for linear methods, and no accumulated rounding.

    Args:
        model: the live model (its parameters are overwritten in place).
        target: the target checkpoint folder, or its state dict.
        vectors: the K task vectors.
        method: a `search.vectors.methods` method name.
        method_options: the method's options (validated; see `search.vectors.methods`).

    Raises:
        ModelError: vectors that do not cover the model's parameters, shapes that differ, NaN/inf in the
            target, or an unknown method / bad options.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        target: Path | Mapping[str, torch.Tensor],
        vectors: Sequence[TaskVector],
        method: str = "task_arithmetic",
        method_options: Mapping[str, Any] | None = None,
    ) -> None:
        from search.vectors.methods import get_method

        self.model = model
        self.method = get_method(method)
        self.options = self.method.validate(method_options)
        self.k = len(vectors)
        params = model_parameters(model)
        for i, vec in enumerate(vectors):
            _check_keys(params, vec.deltas, what=f"task vector {i} ({vec.vector_id[:12] or 'unnamed'})")
        self._entries: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] = []
        for name, theta in _target_tensors(target, sorted(params)):
            param = params[name]
            if tuple(theta.shape) != tuple(param.shape):
                raise ModelError(
                    f"target: tensor {name} has shape {list(theta.shape)}, model has {list(param.shape)}"
                )
            # Always a private copy: a state-dict target may alias the very parameters rewritten below.
            theta32 = theta.detach().to(torch.float32, copy=True).contiguous()
            _check_finite(theta32, where="target", name=name)
            taus = []
            for vec in vectors:
                tau = vec.deltas[name]
                if tuple(tau.shape) != tuple(param.shape):
                    raise ModelError(
                        f"task vector {vec.vector_id[:12] or 'unnamed'}: {name} has shape {list(tau.shape)}, "
                        f"model has {list(param.shape)}"
                    )
                tau = self.method.prepare(tau, name=name, vector_id=vec.vector_id, options=self.options)
                taus.append(tau.reshape(-1))
            if not param.is_contiguous():
                raise ModelError(f"model parameter {name} is not contiguous; cannot rewrite it in place")
            self._entries.append((param.data.view(-1), theta32.view(-1), taus))
        self.numel = sum(e[1].numel() for e in self._entries)
        self._scratch = self.method.scratch(self.k, CHUNK) if self.k else None

    def apply(self, coefficients: Sequence[float]) -> None:
        """Set the model's parameters to theta_T + combine(tau; coefficients), in place.

        Args:
            coefficients: one lambda per vector (negative allowed).

        Raises:
            ModelError: for the wrong number of coefficients or a non-finite one.
        """
        coefs = [float(c) for c in coefficients]
        if len(coefs) != self.k:
            raise ModelError(f"expected {self.k} coefficients, got {len(coefs)}")
        if not all(math.isfinite(c) for c in coefs):
            raise ModelError(f"coefficients must be finite, got {coefs}")
        active = [i for i, c in enumerate(coefs) if c != 0.0]
        active_coefs = [coefs[i] for i in active]
        with torch.no_grad():
            for out, theta, taus in self._entries:
                active_taus = [taus[i] for i in active]
                n = out.numel()
                for start in range(0, n, CHUNK):
                    stop = min(n, start + CHUNK)
                    chunk = out[start:stop]
                    parts = [t[start:stop] for t in active_taus]
                    if out.dtype == torch.float32:
                        self.method.compose(
                            theta[start:stop],
                            parts,
                            active_coefs,
                            out=chunk,
                            scratch=self._scratch,
                            options=self.options,
                        )
                    else:  # a half-precision model: compose in fp32, then round once
                        buf = torch.empty(stop - start, dtype=torch.float32)
                        self.method.compose(
                            theta[start:stop],
                            parts,
                            active_coefs,
                            out=buf,
                            scratch=self._scratch,
                            options=self.options,
                        )
                        chunk.copy_(buf)


def merge_state(
    *,
    target: Path | Mapping[str, torch.Tensor],
    vectors: Sequence[TaskVector],
    coefficients: Sequence[float],
    method: str = "task_arithmetic",
    method_options: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """A from-scratch merge: new fp32 tensors theta_T + combine(tau; lambda), with no live model.

    The reference the composer is tested against, and the naive path of the merge benchmark.

    Returns:
        Canonical name -> merged tensor.

    Raises:
        ModelError: if the vectors and the target differ in tensors or shapes.
    """
    from search.vectors.methods import get_method

    impl = get_method(method)
    options = impl.validate(method_options)
    if len(coefficients) != len(vectors):
        raise ModelError(f"expected {len(vectors)} coefficients, got {len(coefficients)}")
    names = sorted(vectors[0].deltas) if vectors else None
    if names is None:
        if isinstance(target, Mapping):
            return {EMBEDDING if k in _EMBED_ALIASES else k: v.float().clone() for k, v in target.items()}
        ckpt = Checkpoint(Path(target))
        return {n: ckpt.get(n).float().clone() for n in ckpt.names}
    for v in vectors[1:]:
        vectors[0]._check_compatible(v)
    merged: dict[str, torch.Tensor] = {}
    for name, theta in _target_tensors(target, names):
        taus = [
            impl.prepare(v.deltas[name], name=name, vector_id=v.vector_id, options=options)
            .float()
            .reshape(-1)
            for v in vectors
        ]
        merged[name] = theta.float().reshape(-1) + impl.reference(
            taus, [float(c) for c in coefficients], options=options
        )
        merged[name] = merged[name].view(theta.shape)
    return merged
