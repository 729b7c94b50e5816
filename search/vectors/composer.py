"""The composer: the search's hot path, rewriting a live model as theta_T + combine(tau_1..tau_K; lambda).

It keeps the target's fp32 weights and each tensor's K vectors as one `[K, n]` stack (on the model's
device, or streamed from pinned host memory: `search.vectors.placement`) and, for each coefficient vector,
rewrites the model's parameters in place, recomputed from theta_T every time (no drift), chunk by chunk in
one fused matrix-vector pass that reads every vector once and writes every parameter once. `merge_state`
is the from-scratch reference it is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

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
from search.vectors.fused import DTYPES, FusedKernel, fused_kernel
from search.vectors.methods import get_method
from search.vectors.placement import Home, Stager, host_block, vector_home
from search.vectors.taskvector import TaskVector

# Elements per chunk of the composer's methods with scratch (TIES) and the most per 16-bit chunk on the CPU:
# 256K fp32 = 1 MiB, which stays in L2 while K vectors stream past.
CHUNK = 1 << 18
# The composer reads K rows side by side. Rows whose starts share their offset within a 4 KB page (the
# usual case: tensor sizes are multiples of 512) ran at 0.48-0.61 of copy bandwidth at t5-base sizes, against
# 0.65-0.75 when padded so that consecutive rows start 41 cache lines apart modulo a page (an odd number, so
# the 16 rows of K = 16 fall on 16 different line offsets).
PAGE = 4096
ROW_PHASE = 41 * 64
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


class _Entry(NamedTuple):
    """One parameter: where it is written, its fp32 master copy, and its K prepared vectors."""

    out: torch.Tensor  # the parameter's data, flat
    theta: torch.Tensor  # fp32 master weights, flat, on the model's device
    stack: torch.Tensor | None  # [K, n] prepared vectors on the model's device (home `device`)
    blocks: list[torch.Tensor]  # chunk-major [K, m] host blocks (home `streamed`)


def _stacked_rows(taus: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """`taus` as one `[K, n]` view when they already are the rows of one buffer (no copy), else None."""
    first = taus[0]
    if not first.is_contiguous():
        return None
    n, elem = first.numel(), first.element_size()
    step = (taus[1].data_ptr() - first.data_ptr()) // elem if len(taus) > 1 else n
    for i, tau in enumerate(taus):
        if (
            tau.dtype != first.dtype
            or tau.device != first.device
            or not tau.is_contiguous()
            or tau.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
            or tau.data_ptr() != first.data_ptr() + i * step * elem
        ):
            return None
    return first.reshape(-1).as_strided((len(taus), n), (step, 1)) if step >= n else None


def _runs(active: Sequence[int], *, max_gap: int) -> list[tuple[int, int]]:
    """Row ranges `[a, b)` covering the active rows; gaps of at most `max_gap` inactive rows are bridged
    (read with a zero coefficient: cheaper than another pass over the output)."""
    runs: list[list[int]] = []
    for i in active:
        if runs and i - runs[-1][1] <= max_gap:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a, b) for a, b in runs]


class Composer:
    """Rewrites a live model's parameters to theta_T + combine(tau_1..tau_K; lambda) for each new lambda.

    The target's weights are copied once into fp32 master buffers on the model's device, and each tensor's
    K prepared vectors (TIES trimming and DARE masks done once) into one `[K, n]` stack in their stored
    dtype: on the model's device when they fit, else in pinned host memory, streamed per chunk
    (`search.vectors.placement`). Vectors that already are the rows of one buffer are used in place.
    `apply` writes every parameter from scratch in chunks, one fused pass per chunk for linear methods:
    `theta_T + stack[:, chunk]^T lambda` as one matrix-vector product that reads each vector once and
    writes the parameter once (16-bit vectors widened to fp32 in a cache-sized scratch first); no
    allocation and no accumulated rounding.

    Args:
        model: the live model (its parameters are overwritten in place).
        target: the target checkpoint folder, or its state dict.
        vectors: the K task vectors.
        method: a `search.vectors.methods` method name.
        method_options: the method's options (validated; see `search.vectors.methods`).
        home: force where the vectors live (`device` or `streamed`); None decides by free device memory.
        chunk: elements per chunk (None: chosen for the device and the vectors' dtype).

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
        home: Home | None = None,
        chunk: int | None = None,
    ) -> None:
        self.model = model
        self.method = get_method(method)
        self.options = self.method.validate(method_options)
        self.k = len(vectors)
        params = model_parameters(model)
        for i, vec in enumerate(vectors):
            check_keys(params, vec.deltas, what=f"task vector {i} ({vec.vector_id[:12] or 'unnamed'})")
        self.device = next(iter(params.values())).device if params else torch.device("cpu")
        self.home = vector_home(self._stack_bytes(vectors, params), device=self.device, force=home)
        self.storage = self._storage_dtype(vectors)
        self.chunk = chunk or self._default_chunk()
        self._fused = self._fused_kernel()  # before the entries: it decides how their stacks are laid out
        self._entries = [
            self._entry(name, theta, params[name], vectors)
            for name, theta in _target_tensors(target, sorted(params))
        ]
        self.numel = sum(e.theta.numel() for e in self._entries)
        rows = max(self.k, 1)
        # The fused kernel widens in registers: only the torch path needs the [K, chunk] fp32 scratch.
        scratch = 0 if self._fused is not None else rows * self.chunk
        self._scratch = torch.empty(scratch, dtype=torch.float32, device=self.device)
        self._buf = torch.empty(self.chunk, dtype=torch.float32, device=self.device)
        self._method_scratch = self.method.scratch(self.k, self.chunk) if self.k else None
        if self._method_scratch is not None:
            self._method_scratch = self._method_scratch.to(self.device)
        self._stager = (
            Stager(device=self.device, shape=(rows, self.chunk), dtype=self.storage)
            if self.home == "streamed"
            else None
        )

    def _fused_kernel(self) -> FusedKernel | None:
        """The compiled one-pass kernel where it applies: 16-bit stacks of a linear method on the CPU."""
        if self.device.type != "cpu" or self.home != "device" or not self.method.linear or not self.k:
            return None
        return fused_kernel() if self.storage in DTYPES else None

    @property
    def path(self) -> str:
        """How `apply` composes: `fused` (the compiled kernel) or `torch` (chunked torch operations)."""
        return "fused" if self._fused is not None else "torch"

    def _stack_bytes(self, vectors: Sequence[TaskVector], params: Mapping[str, torch.Tensor]) -> int:
        # Only task arithmetic keeps the stored dtype; trimmed or masked vectors are fp32.
        identity = self.method.name == "task_arithmetic"
        return sum(
            p.numel() * (v.deltas[name].element_size() if identity else 4)
            for v in vectors
            for name, p in params.items()
        )

    def _storage_dtype(self, vectors: Sequence[TaskVector]) -> torch.dtype:
        dtypes = {t.dtype for v in vectors for t in v.deltas.values()}
        if self.method.name == "task_arithmetic" and len(dtypes) == 1:
            only = dtypes.pop()
            if only in (torch.bfloat16, torch.float16):
                return only
        return torch.float32

    def _default_chunk(self) -> int:
        if self.device.type != "cpu":
            return 1 << 22  # few kernel launches; the scratch stays a small share of device memory
        if self.storage == torch.float32 and self.method.linear and self.home == "device":
            return 1 << 19  # read in place: chunks only bound the fp32 output in flight
        # 16-bit vectors are widened into a [K, chunk] fp32 scratch that should stay in L2.
        return max(CHUNK >> 5, min(CHUNK, (2 << 20) // (4 * max(self.k, 1))))

    def _entry(
        self, name: str, theta: torch.Tensor, param: torch.Tensor, vectors: Sequence[TaskVector]
    ) -> _Entry:
        if tuple(theta.shape) != tuple(param.shape):
            raise ModelError(
                f"target: tensor {name} has shape {list(theta.shape)}, model has {list(param.shape)}"
            )
        if not param.is_contiguous():
            raise ModelError(f"model parameter {name} is not contiguous; cannot rewrite it in place")
        # Always a private copy: a state-dict target may alias the very parameters rewritten below.
        theta32 = theta.detach().to(torch.float32, copy=True).contiguous()
        check_finite(theta32, where="target", name=name)
        theta32 = theta32.view(-1).to(self.device)
        taus = []
        for vec in vectors:
            tau = vec.deltas[name]
            if tuple(tau.shape) != tuple(param.shape):
                raise ModelError(
                    f"task vector {vec.vector_id[:12] or 'unnamed'}: {name} has shape {list(tau.shape)}, "
                    f"model has {list(param.shape)}"
                )
            prepared = self.method.prepare(tau, name=name, vector_id=vec.vector_id, options=self.options)
            taus.append(prepared.detach().reshape(-1))
        out = param.data.view(-1)
        if not taus:
            return _Entry(out, theta32, None, [])
        n = theta32.numel()
        if self.home == "streamed":
            blocks = []
            for start in range(0, n, self.chunk):
                stop = min(n, start + self.chunk)
                block = host_block((len(taus), stop - start), dtype=self.storage, device=self.device)
                for row, tau in zip(block, taus, strict=True):
                    row.copy_(tau[start:stop])
                blocks.append(block)
            return _Entry(out, theta32, None, blocks)
        stack = _stacked_rows(taus)
        if stack is None or stack.dtype != self.storage or stack.device != self.device:
            stack = self._new_stack(len(taus), n)
            for row, tau in zip(stack, taus, strict=True):
                row.copy_(tau)
        return _Entry(out, theta32, stack, [])

    def _new_stack(self, k: int, n: int) -> torch.Tensor:
        """An empty `[k, n]` stack; on the CPU its rows start an odd number of cache lines apart within a
        page (`ROW_PHASE`), not at the same page offset."""
        if self.device.type != "cpu":
            return torch.empty((k, n), dtype=self.storage, device=self.device)
        elem = torch.empty((), dtype=self.storage).element_size()
        pad = (ROW_PHASE - n * elem) % PAGE // elem
        return torch.empty((k, n + pad), dtype=self.storage, device=self.device)[:, :n]

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
        if not active:
            with torch.no_grad():
                for e in self._entries:
                    e.out.copy_(e.theta)
            return
        if self._fused is not None:
            self._apply_fused(active, coefs)
            return
        if self.home == "streamed":  # one copy per chunk: the span of the active rows
            runs = [(active[0], active[-1] + 1)]
        else:  # bridging costs a read of a 16-bit row or, in place, of an fp32 one
            runs = _runs(active, max_gap=2 if self.storage == torch.float32 else 4)
        rows = [i for a, b in runs for i in range(a, b)]
        cvec = torch.tensor([coefs[i] for i in rows], dtype=torch.float32, device=self.device)
        with torch.no_grad():
            for e in self._entries:
                self._apply_entry(e, runs, cvec, [coefs[i] for i in active], [rows.index(i) for i in active])

    def _apply_fused(self, active: list[int], coefs: tuple[float, ...]) -> None:
        """One pass per tensor through the compiled kernel: only the active rows are read."""
        assert self._fused is not None
        rows = torch.tensor(active, dtype=torch.int64)
        cvec = torch.tensor([coefs[i] for i in active], dtype=torch.float32)
        threads = torch.get_num_threads()
        for e in self._entries:
            assert e.stack is not None
            dst = e.out if e.out.dtype == torch.float32 else self._tensor_buf(e)
            self._fused.compose(theta=e.theta, stack=e.stack, rows=rows, coefs=cvec, out=dst, threads=threads)
            if dst is not e.out:
                e.out.copy_(dst)  # a half-precision model: composed in fp32, rounded once

    def _tensor_buf(self, e: _Entry) -> torch.Tensor:
        """An fp32 buffer the size of the entry (half-precision models only; reused while large enough)."""
        n = e.out.numel()
        if self._buf.numel() < n:
            self._buf = torch.empty(n, dtype=torch.float32, device=self.device)
        return self._buf[:n]

    def _apply_entry(
        self,
        e: _Entry,
        runs: list[tuple[int, int]],
        cvec: torch.Tensor,
        active_coefs: list[float],
        active_rows: list[int],
    ) -> None:
        n = e.out.numel()
        for j, start in enumerate(range(0, n, self.chunk)):
            stop = min(n, start + self.chunk)
            m = stop - start
            mat = self._rows(e, j, runs, start, stop)
            dst = e.out[start:stop] if e.out.dtype == torch.float32 else self._buf[:m]
            if self.method.linear:
                if mat.shape[0] == 1:  # one vector (screening): a plain fused add
                    torch.add(e.theta[start:stop], mat[0], alpha=active_coefs[0], out=dst)
                else:
                    torch.addmv(e.theta[start:stop], mat.t(), cvec, out=dst)
            else:
                self.method.compose(
                    e.theta[start:stop],
                    [mat[r] for r in active_rows],
                    active_coefs,
                    out=dst,
                    scratch=self._method_scratch,
                    options=self.options,
                )
            if self._stager is not None:
                self._stager.release()
            if e.out.dtype != torch.float32:
                e.out[start:stop].copy_(dst)  # a half-precision model: composed in fp32, rounded once

    def _rows(self, e: _Entry, j: int, runs: list[tuple[int, int]], start: int, stop: int) -> torch.Tensor:
        """The chunk's rows of every run as one `[r, m]` fp32 matrix: a view where the stack is fp32 and
        one run covers them, else widened or gathered into the scratch."""
        m = stop - start
        if self._stager is not None:
            ((a, b),) = runs
            staged = self._stager.stage(e.blocks[j], slice(a, b))
            if staged.dtype == torch.float32:
                return staged
            mat = self._scratch[: (b - a) * m].view(b - a, m)
            mat.copy_(staged)
            return mat
        assert e.stack is not None
        if e.stack.dtype == torch.float32 and len(runs) == 1:
            a, b = runs[0]
            return e.stack[a:b, start:stop]
        r = sum(b - a for a, b in runs)
        mat = self._scratch[: r * m].view(r, m)
        at = 0
        for a, b in runs:
            mat[at : at + b - a].copy_(e.stack[a:b, start:stop])
            at += b - a
        return mat


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
