"""The zoo's float kernels: the same on every x86 machine, so a seed names one zoo everywhere.

Training pico models for hundreds of steps amplifies the last bit of every float sum. The same seed built
on one machine with its native AVX-512 kernels and with AVX2 kernels gave zoos whose targets differed by
up to 8 points and whose helper pairs were ordered differently: as far apart as two seeds. Threads are
already pinned to one (`build`); the kernels are pinned here, to ATen's unvectorised ones and to MKL's
conditional numerical reproducibility mode, both chosen at process start from the environment. A process
that did not start that way builds the zoo in a child that does (`build_in_pinned_child`), and the zoo's
and the demo's command lines restart themselves pinned (`reexec_pinned`). The product itself runs on the
machine's native kernels; only the offline world is pinned.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from search.errors import DataError

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
_MARK = "TASKVEC_ZOO_PINNED"  # set in a pinned child: where the pins have no effect, it never restarts again
_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the `benchmarks` package


def pinned() -> bool:
    """Whether this process runs the pinned kernels (ATen reads its choice once, MKL at its first call)."""
    return (
        torch.backends.cpu.get_cpu_capability() == "DEFAULT"
        and os.environ.get("MKL_CBWR") == PINNED_ENV["MKL_CBWR"]
    )


def needs_pinning() -> bool:
    """Whether the zoo's work must move to a pinned process (never from one that already moved)."""
    return not pinned() and os.environ.get(_MARK) != "1"


def pinned_env() -> dict[str, str]:
    """This process's environment with the pins, and `benchmarks` importable from any working folder."""
    path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **PINNED_ENV, _MARK: "1", "PYTHONPATH": path}


def reexec_pinned(module: str) -> None:
    """Replace this process by `python -m module <same arguments>` with the pins, unless already pinned."""
    if needs_pinning():
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], pinned_env())


def build_in_pinned_child(*, out: Path, seed: int, scale: str, progress: bool, workers: int | None) -> Path:
    """Run `python -m benchmarks.zoo build` pinned; its progress goes to this stderr, its result line nowhere.

    Raises:
        DataError: the child failed (its own one-line error, when quiet, is the message).
    """
    argv = [sys.executable, "-m", "benchmarks.zoo", "build", "--out", str(out), "--seed", str(seed)]
    argv += ["--scale", scale, *(["--workers", str(workers)] if workers else [])]
    argv += [] if progress else ["--quiet"]
    done = subprocess.run(
        argv,
        env=pinned_env(),
        stdout=subprocess.DEVNULL,
        stderr=None if progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or "").splitlines() if ln.strip()]
        reason = lines[-1].removeprefix("error: ") if lines else f"the builder exited with {done.returncode}"
        raise DataError(f"{out}: zoo build failed: {reason}")
    return out


def kernels_fingerprint() -> str:
    """A short hash of what this process's float kernels compute on fixed inputs: a matrix product and
    its gradient, the elementwise functions a T5 step uses, one AdamW step.

    Two machines whose fingerprints differ build different zoos from one seed, so figures measured on one
    are not the other's. Measured: the pinned kernels still differ across CPU vendors (an AMD EPYC built
    seed 0 with other targets than the earlier sessions' machine, CPU not recorded); of a pico T5 training step's
    kernels only MKL's product changed with `MKL_CBWR` there, oneDNN's switches changed nothing.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the zoo's own setting: more threads split sums differently
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(64, 384, generator=gen)
        layer = torch.nn.Linear(384, 96)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(96, 384, generator=gen))
            layer.bias.zero_()
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
        h = layer(x)
        loss = torch.nn.functional.cross_entropy(h, torch.arange(64) % 96)
        loss = loss + torch.rsqrt(h.pow(2).mean(-1) + 1e-6).sum() + torch.tanh(h).exp().log1p().mean()
        loss.backward()
        opt.step()
        digest = hashlib.sha256()
        for t in (h, layer.weight, layer.weight.grad, torch.softmax(h, -1)):
            digest.update(t.detach().contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]
    finally:
        torch.set_num_threads(threads)
