"""The composer's compiled pass on the CPU: theta + sum_j lambda_j * widen(tau_j), in one pass.

Why it exists: a CPU without native bf16 (AVX2, say) widens 16-bit tensors in torch at a few GB/s, and torch
has no matrix-vector product that takes a bf16 matrix and accumulates in fp32. The torch path therefore
widens each chunk into an fp32 scratch and multiplies that: two passes, which kept a t5-base composition of
16 bf16 vectors at about 0.28 of copy bandwidth. `_fused.c` widens in registers and sums in fp32 in one
pass that reads every vector element once and writes every parameter once (fp32 stacks need no widening:
torch's `addmv` reads them in place at about the same speed as this kernel would, so they stay on torch).

It is plain C with no Python or torch headers, compiled at first use by the system C compiler (`CC`, else
`cc`) for this CPU into `TASKVEC_HOME/kernels`, under a name keyed by the source, the flags and the CPU, and
loaded with ctypes (which releases the GIL, so threads split one tensor between them). Before first use it
is checked against torch on a small case. Where there is no compiler, no AVX2/FMA/F16C, or `TASKVEC_FUSED=0`,
`fused_kernel()` is None and the composer keeps its torch path: nothing depends on the kernel but speed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import torch

from registry import constants

log = logging.getLogger(__name__)

SOURCE = "_fused.c"
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
# Below this many elements a tensor is one call: splitting it costs more than the second thread gains.
SPLIT_MIN = 1 << 20
# Threads split a tensor at multiples of this many elements: the kernel's SIMD step, and whole cache lines.
ALIGN = 32
_P = ctypes.c_void_p


def _cpu_key() -> str:
    """What the compiled code depends on besides its source: the machine and, on Linux, the CPU's flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{flags}"


def _compile(source: bytes, target: Path) -> None:
    """Compile `source` into the shared library `target`, atomically (several workers may race here)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    cc = shlex.split(os.environ.get("CC") or "cc")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(source)
        out = Path(tmp) / target.name
        subprocess.run([*cc, *FLAGS, "-o", str(out), str(src)], check=True, capture_output=True, timeout=120)
        os.replace(out, target)


# The stack dtypes the kernel reads.
DTYPES = (torch.bfloat16, torch.float16)


class FusedKernel:
    """The loaded kernel. `compose` writes `out = theta + sum_j coefs[j] * stack[rows[j]]` (fp32 out)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._fn = lib.taskvec_fused
        self._fn.restype = None
        self._fn.argtypes = [_P, _P, ctypes.c_int64, _P, _P, ctypes.c_int32]
        self._fn.argtypes += [ctypes.c_int64, ctypes.c_int64, ctypes.c_int32, _P]
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def compose(
        self,
        *,
        theta: torch.Tensor,
        stack: torch.Tensor,
        rows: torch.Tensor,
        coefs: torch.Tensor,
        out: torch.Tensor,
        threads: int = 1,
    ) -> None:
        """`out[i] = theta[i] + sum_j coefs[j] * stack[rows[j], i]`, in fp32, split over `threads`.

        Args:
            theta: flat contiguous fp32 `[n]` on the CPU.
            stack: `[K, n]` bf16 or fp16 with contiguous rows (any row stride).
            rows: int64 indices of the rows to add (contiguous, kept alive by the caller).
            coefs: fp32 coefficients, one per entry of `rows`.
            out: flat contiguous fp32 `[n]`; may not overlap `stack` (it may be `theta` itself).
            threads: how many threads share the tensor (tensors under `SPLIT_MIN` use one).
        """
        n = theta.numel()
        assert stack.dtype in DTYPES and stack.stride(1) == 1 and stack.device.type == "cpu"
        assert out.dtype == theta.dtype == coefs.dtype == torch.float32 and rows.dtype == torch.int64
        args = (theta.data_ptr(), stack.data_ptr(), stack.stride(0), rows.data_ptr(), coefs.data_ptr())
        tail = (int(stack.dtype == torch.bfloat16), out.data_ptr())
        r = rows.numel()
        if threads <= 1 or n < SPLIT_MIN:
            self._fn(*args, r, 0, n, *tail)
            return
        if self._pool is None or self._pool_size < threads:
            self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="taskvec-fused")
            self._pool_size = threads
        step = -(-n // threads // ALIGN) * ALIGN
        spans = [(a, min(n, a + step)) for a in range(0, n, step)]
        for job in [self._pool.submit(self._fn, *args, r, a, b, *tail) for a, b in spans]:
            job.result()


def _self_test(kernel: FusedKernel) -> bool:
    """The kernel against torch on a small ragged case, for each dtype (a miscompiled kernel is not used)."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(1000, generator=gen)
    for dtype in DTYPES:
        stack = (torch.randn(3, 1000, generator=gen) * 0.1).to(dtype)
        rows = torch.tensor([0, 2], dtype=torch.int64)
        coefs = torch.tensor([0.5, -1.25])
        out = torch.empty(1000)
        kernel.compose(theta=theta, stack=stack, rows=rows, coefs=coefs, out=out)
        ref = theta + 0.5 * stack[0].float() - 1.25 * stack[2].float()
        if not torch.allclose(out, ref, rtol=0, atol=1e-5):
            return False
    return True


@functools.cache
def _load(home: Path) -> FusedKernel | None:
    source = resources.files("search.vectors").joinpath(SOURCE).read_bytes()
    key = hashlib.sha256(source + repr(FLAGS).encode() + _cpu_key().encode()).hexdigest()[:16]
    path = home / "kernels" / f"fused-{key}.so"
    try:
        if not path.exists():
            _compile(source, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("fused composition kernel unavailable (%s); composing with torch", exc)
        return None
    lib.taskvec_fused_simd.restype = ctypes.c_int32
    if not lib.taskvec_fused_simd():
        log.debug("fused composition kernel built without AVX2/FMA/F16C; composing with torch")
        return None
    kernel = FusedKernel(lib)
    if not _self_test(kernel):
        log.warning("fused composition kernel %s disagrees with torch; composing with torch", path)
        return None
    return kernel


def fused_kernel() -> FusedKernel | None:
    """The compiled kernel for this CPU, or None where it cannot be used (see the module docstring)."""
    if os.environ.get(constants.ENV_FUSED, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return _load(constants.home())
