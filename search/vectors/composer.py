"""The composer: the search's hot path, rewriting a live model as theta_T + combine(tau_1..tau_K; lambda).

It keeps the target's weights and the K vectors as contiguous buffers and, for each coefficient vector,
rewrites the model's parameters in place, recomputed from theta_T every time (no drift), in cache-sized
chunks so each chunk of the output stays in cache while the vectors stream past it once. `merge_state`
is the from-scratch reference it is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from registry.errors import ModelError
from search.vectors.checkpoint import (
    EMBED_ALIASES,
    EMBEDDING,
    Checkpoint,
    check_finite,
    check_keys,
    model_parameters,
)
from search.vectors.methods import get_method
from search.vectors.taskvector import TaskVector

# Elements per chunk of the composer: 256K fp32 = 1 MiB, which stays in L2 while K vectors stream past.
CHUNK = 1 << 18
# The largest |coefficient| accepted anywhere (screening grid, search bound, merge --add). Useful ones are
# O(1): the paper's and FusionBench's grids stay within [0, 1.5], and at 100 a vector already outweighs
# the target's own weights by orders of magnitude. Past the bound lies only noise and, towards float's
# range, overflow: 1e308 cannot even be cast to fp32, and torch fails mid-composition.
MAX_COEFFICIENT = 100.0


def check_coefficients(values: Iterable[float], *, what: str) -> tuple[float, ...]:
    """`values` as floats, each checked finite and within +-`MAX_COEFFICIENT`.

    Args:
        values: the coefficients (lambdas).
        what: where they came from, starting the message (e.g. `--lambdas '0.1,nan'`).

    Returns:
        The values as a tuple of floats.

    Raises:
        ModelError: naming `what` and the first bad value.
    """
    coefs = tuple(float(v) for v in values)
    for c in coefs:
        if not math.isfinite(c):
            raise ModelError(f"{what}: coefficients must be finite numbers, got {c}")
        if abs(c) > MAX_COEFFICIENT:
            raise ModelError(
                f"{what}: coefficient {c:g} is out of range (at most {MAX_COEFFICIENT:g} in absolute value)"
            )
    return coefs


def _target_tensors(
    target: Path | Mapping[str, torch.Tensor], names: Iterable[str]
) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(target, Mapping):
        canon = {EMBEDDING if k in EMBED_ALIASES else k: v for k, v in target.items()}
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
        self.model = model
        self.method = get_method(method)
        self.options = self.method.validate(method_options)
        self.k = len(vectors)
        params = model_parameters(model)
        for i, vec in enumerate(vectors):
            check_keys(params, vec.deltas, what=f"task vector {i} ({vec.vector_id[:12] or 'unnamed'})")
        self._entries: list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]] = []
        for name, theta in _target_tensors(target, sorted(params)):
            param = params[name]
            if tuple(theta.shape) != tuple(param.shape):
                raise ModelError(
                    f"target: tensor {name} has shape {list(theta.shape)}, model has {list(param.shape)}"
                )
            # Always a private copy: a state-dict target may alias the very parameters rewritten below.
            theta32 = theta.detach().to(torch.float32, copy=True).contiguous()
            check_finite(theta32, where="target", name=name)
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
            ModelError: for the wrong number of coefficients, or one not finite or out of range
                (see `check_coefficients`).
        """
        coefs = check_coefficients(coefficients, what="composition")
        if len(coefs) != self.k:
            raise ModelError(f"expected {self.k} coefficients, got {len(coefs)}")
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
        ModelError: if the vectors and the target differ in tensors or shapes, or a coefficient is not
            finite or out of range.
    """
    impl = get_method(method)
    options = impl.validate(method_options)
    coefficients = check_coefficients(coefficients, what="merge")
    if len(coefficients) != len(vectors):
        raise ModelError(f"expected {len(vectors)} coefficients, got {len(coefficients)}")
    names = sorted(vectors[0].deltas) if vectors else None
    if names is None:
        if isinstance(target, Mapping):
            return {EMBEDDING if k in EMBED_ALIASES else k: v.float().clone() for k, v in target.items()}
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
