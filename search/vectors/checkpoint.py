"""Reading T5 checkpoints lazily under canonical tensor names, and checking two share an architecture.

T5's token embedding is one tensor however a checkpoint spells it (`shared`, `encoder.embed_tokens`,
`decoder.embed_tokens`, and `lm_head` when the embeddings are tied), so tied weights are counted and
updated once (invariant 3). An untied `lm_head` (T5 v1.1 / FLAN: `tie_word_embeddings: false`) is its
own tensor. The same names key a live model's parameters (`model_parameters`).

Every folder first passes the registry's checks (`registry.compat.check_folder`: links, config types and
bounds, T5, safetensors headers, config against weights), with the registry's reasons. Checkpoints are
then read tensor by tensor from safetensors (`model.safetensors` or shards through
`model.safetensors.index.json`); pickle-only checkpoints are read with `torch.load(weights_only=True)` and
nothing else. Non-float tensors are skipped.

"Same architecture" means the registry's shape fields (`registry.compat.shape_config`) agree, so what
`taskvec merge` accepts is exactly what the registry calls compatible.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from registry.compat import check_folder, shape_config
from registry.constants import PYTORCH_INDEX, PYTORCH_SINGLE
from registry.errors import ModelError

EMBEDDING = "shared.weight"
LM_HEAD = "lm_head.weight"
EMBED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def read_config(folder: Path) -> dict[str, Any]:
    """The checkpoint's `config.json` as a dict, once the folder passed the registry's checks.

    Raises:
        ModelError: if the folder fails `registry.compat.check_folder` (the registry's reason).
    """
    return dict(check_folder(folder).config)


def architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    """`model_type` and the registry's shape-defining fields, T5Config's defaults filled in."""
    return {"model_type": config.get("model_type"), **shape_config(config)}


def check_same_architecture(a: Path, b: Path, *, what: str = "base") -> None:
    """Raise unless both folders pass the registry's checks and share the same architecture.

    Raises:
        ModelError: the registry's reason for a folder it would refuse, else naming the first differing
            config field.
    """
    arch_a = architecture(check_folder(a).config)
    arch_b = architecture(check_folder(b).config)
    for key, value in arch_a.items():
        if value != arch_b[key]:
            raise ModelError(
                f"{b}: does not match the {what} {a} (config {key}: {arch_b[key]!r} vs {value!r})"
            )


class Checkpoint:
    """Lazy access to a checkpoint folder's float tensors under canonical names.

    The folder first passes the registry's checks (`registry.compat.check_folder`), so a folder the registry
    would refuse is refused with its reason before any tensor is read.

    Args:
        folder: a model folder (config.json + safetensors, sharded or not, or a pickle as last resort).

    Raises:
        ModelError: if the folder fails the checks or a weight file is unreadable.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        report = check_folder(self.folder)
        self.config = dict(report.config)
        self._handles: dict[Path, Any] = {}
        self._pickles: dict[Path, dict[str, torch.Tensor]] = {}
        self.key_file: dict[str, Path] = {}
        self.pickle = report.pickle
        if report.layout is not None:
            for name in sorted({entry.file for entry in report.layout.tensors.values()}):
                self._add_safetensors(self.folder / name)
        elif report.pickled is not None:
            # all shards in one state dict, read by the check with weights_only=True as the registry reads them
            name = PYTORCH_SINGLE if PYTORCH_SINGLE in report.files else PYTORCH_INDEX
            self._add_state(self.folder / name, report.pickled)
        self.untied_lm_head = self._untied()
        self.names = self._canonical_names()

    def _add_safetensors(self, path: Path) -> None:
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

    def _add_state(self, path: Path, state: Mapping[str, Any]) -> None:
        self._pickles[path] = dict(state)
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
        return next((k for k in EMBED_ALIASES if k in self.key_file), None)

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
            if key in EMBED_ALIASES or (key == LM_HEAD and not self.untied_lm_head):
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


def check_finite(tensor: torch.Tensor, *, where: str, name: str) -> None:
    """Raise on NaN/inf: a broken checkpoint must not turn into a plausible-looking merge."""
    if not torch.isfinite(tensor).all():
        raise ModelError(f"{where}: tensor {name} has NaN/inf values")


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
        canonical = EMBEDDING if (param is emb or name in EMBED_ALIASES) else name
        seen[id(param)] = canonical
        out[canonical] = param
    return out


def check_keys(params: Mapping[str, Any], deltas: Mapping[str, Any], *, what: str) -> None:
    """Raise unless a vector's tensors and a model's parameters are the same set of canonical names."""
    missing = sorted(set(deltas) - set(params))
    if missing:
        raise ModelError(f"{what}: tensor {missing[0]} has no parameter in the model")
    uncovered = sorted(set(params) - set(deltas))
    if uncovered:
        raise ModelError(f"{what}: model parameter {uncovered[0]} is not in the vector")
