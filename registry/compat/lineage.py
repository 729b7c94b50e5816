"""Check 4, lineage (a few small byte ranges of weights): relative distance to the base below a calibrated
threshold; and pickle-only repos, checked on request through torch's `weights_only` loader (no code runs).
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections.abc import Mapping

import numpy as np

from registry.compat.tensors import DTYPES, SafetensorsLayout, TensorEntry, decode
from registry.compat.verdicts import (
    REASON_INTEGRITY,
    REASON_LINEAGE,
    REASON_MALFORMED,
    REASON_TENSOR,
    BaseProfile,
    Reject,
)
from registry.constants import (
    LINEAGE_MAX_DISTANCE,
    LINEAGE_PROBE_MAX_BYTES,
    PYTORCH_INDEX,
    PYTORCH_SINGLE,
    T5_SHARED,
    T5_TIED_ALIASES,
)
from registry.errors import RegistryError
from registry.sources import RepoInfo, Source, validate_filename

# Tensors read for lineage: the shared embedding plus one attention and one feed-forward weight per stack.
# `wo` exists in both the ReLU and the gated-GELU feed-forward, so the set is the same for every variant.
LINEAGE_PROBES = (
    T5_SHARED,
    "encoder.block.0.layer.0.SelfAttention.q.weight",
    "encoder.block.0.layer.1.DenseReluDense.wo.weight",
    "decoder.block.0.layer.0.SelfAttention.k.weight",
    "decoder.block.0.layer.2.DenseReluDense.wo.weight",
)


def probe_window(entry: TensorEntry) -> tuple[int, int]:
    """(start, length) of the bytes read from a probe tensor: all of it, or a middle window of at most
    LINEAGE_PROBE_MAX_BYTES (the same elements for every checkpoint of one base, whatever the dtype)."""
    width = DTYPES[entry.dtype][0]
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


# Lines of torch's weights_only refusal that explain torch, not the file (the one naming what was refused,
# e.g. "Trying to load unsupported GLOBAL os.system ...", is kept).
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _load_failure(exc: BaseException) -> str:
    """One line saying why torch's safe loader refused a file."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    if useful:
        return useful[0]
    if isinstance(exc, EOFError):
        return "empty or truncated file"
    return lines[0] if lines else type(exc).__name__


def load_pickled_state(source: Source, info: RepoInfo) -> dict:
    """The state dict of a pickle-only repo, loaded with `torch.load(weights_only=True)` (no code runs),
    memory-mapped when the file is in torch's zip format.

    Raises:
        Reject: `integrity` if a file is refused by the safe loader or unreadable; `malformed` for a bad index.
    """
    import torch  # lazy: ~1.9 s to import, and only --verify-pickles needs it

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
        if name not in info.files:
            raise Reject(REASON_INTEGRITY, f"{PYTORCH_INDEX} names a missing shard {name}")
        path = source.file_path(info.repo_id, info.revision, name)
        try:
            # memory-mapped when torch's zip format allows (every torch.save since 1.6): checking a pickle
            # reads its tensors' bytes only when something looks at them
            mmap = zipfile.is_zipfile(path)
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
            why = _load_failure(exc)
            raise Reject(REASON_INTEGRITY, f"{name}: not loadable with weights_only=True ({why})") from exc
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


def check_lineage(distance: float, info: RepoInfo, base: BaseProfile) -> None:
    """Refuse a checkpoint whose distance to the base says it does not descend from it.

    Raises:
        Reject: `lineage_mismatch`, quoting the card's base_model claim if it makes one.
    """
    if not distance <= LINEAGE_MAX_DISTANCE:
        claim = f"; card claims base_model={list(info.card.base_model)}" if info.card.base_model else ""
        raise Reject(
            REASON_LINEAGE,
            f"relative distance {distance:.3f} to {base.repo_id} > {LINEAGE_MAX_DISTANCE} "
            f"(not a descendant){claim}",
        )


def torch_isfinite_all(tensor) -> bool:
    """Whether every element of a tensor is finite."""
    import torch  # lazy: ~1.9 s to import, and only --verify-pickles needs it

    return bool(torch.isfinite(tensor).all())
