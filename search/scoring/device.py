"""Where models run and in what precision: `--device auto|cpu|cuda|cuda:N|mps`, `--dtype auto|fp32|bf16|fp16`.

The weights always stay fp32 (composition keeps fp32 master weights, invariant 3); `--dtype` only picks the
autocast dtype the scorer runs under. `auto` is bf16 autocast on a CUDA device that supports it and fp32
elsewhere (CPU bf16 autocast is correct but rarely faster, and MPS autocast is still partial).

fp16 is refused on the CPU: T5's activations overflow float16, and CPU float16 matmuls are slower than
fp32 on most CPUs, so it would only be a slower, less exact fp32. bf16 on the CPU works (torch's CPU
autocast), and a row scored so is marked bf16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from registry.constants import ENV_DEVICE
from search.errors import SearchError

DEVICES = "auto, cpu, cuda, cuda:N or mps"
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""`--dtype` name -> autocast dtype (None: run the fp32 weights as they are)."""
DTYPE_NAMES = ("auto", *DTYPES)


@dataclass(frozen=True)
class Placement:
    """A resolved `--device` and `--dtype`.

    Attributes:
        device: where the model's weights live.
        autocast: the scorer's autocast dtype, None for fp32.
    """

    device: torch.device
    autocast: torch.dtype | None

    @property
    def device_type(self) -> str:
        """`cpu`, `cuda` or `mps`: what a row stores (the index does not change a score)."""
        return self.device.type

    @property
    def dtype_name(self) -> str:
        """`fp32`, `bf16` or `fp16`."""
        return dtype_name(self.autocast)


def _cuda_missing_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)"


def resolve_device(spec: str | None = None) -> torch.device:
    """`auto|cpu|cuda|cuda:N|mps` (None: `TASKVEC_DEVICE`, else auto) as a device that is there.

    `auto` picks CUDA (device 0, or the one `torch.cuda.current_device()` names) when it is available,
    else the CPU; MPS is only used when asked for (its autocast and some T5 kernels are still partial).

    Raises:
        SearchError: one line naming the device and why it cannot be used (no CUDA, no such GPU, no MPS).
    """
    text = (spec if spec is not None else os.environ.get(ENV_DEVICE) or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else _cpu()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise SearchError(f"--device {text!r}: not a device (use {DEVICES})") from exc
    if device.type == "cpu":
        return _cpu()
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SearchError(f"--device {text}: CUDA is not available: {_cuda_missing_reason()}")
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= count:
            raise SearchError(f"--device {text}: no such GPU (this machine has {count}: cuda:0..{count - 1})")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise SearchError(f"--device {text}: MPS is not available (it needs an Apple-silicon Mac)")
        return torch.device("mps")
    raise SearchError(f"--device {text!r}: unsupported device type {device.type!r} (use {DEVICES})")


def _cpu() -> torch.device:
    return torch.device("cpu")


def resolve_dtype(spec: str | None, *, device: torch.device) -> torch.dtype | None:
    """`auto|fp32|bf16|fp16` as the scorer's autocast dtype on `device` (None: fp32).

    Raises:
        SearchError: an unknown name, fp16 on the CPU, or bf16 on a GPU without bf16 support.
    """
    text = (spec or "auto").strip().lower()
    if text not in DTYPE_NAMES:
        raise SearchError(f"--dtype {text!r}: use {', '.join(DTYPE_NAMES)}")
    if text == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    dtype = DTYPES[text]
    if dtype == torch.float16 and device.type == "cpu":
        raise SearchError(
            "--dtype fp16 on cpu: float16 autocast is for GPUs (T5 overflows float16 and CPU fp16 is slow); "
            "use bf16 or fp32"
        )
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise SearchError(f"--dtype bf16 on {device}: {name} has no bfloat16 support; use fp32 or fp16")
    return dtype


def resolve(device: str | None = None, dtype: str | None = None) -> Placement:
    """`--device` and `--dtype` together (see `resolve_device`, `resolve_dtype`).

    Raises:
        SearchError: one line each (see the two functions).
    """
    where = resolve_device(device)
    return Placement(device=where, autocast=resolve_dtype(dtype, device=where))


def dtype_name(autocast: torch.dtype | None) -> str:
    """The `--dtype` name of an autocast dtype (None -> `fp32`)."""
    for name, dt in DTYPES.items():
        if dt == autocast:
            return name
    return str(autocast).removeprefix("torch.")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (the one a scorer puts its inputs on)."""
    return next(model.parameters()).device


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an accelerator running out of memory (CUDA's typed error, or MPS's RuntimeError)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "MPS backend out of memory" in str(exc)


def release_cached_memory(device: torch.device) -> None:
    """Give the allocator's cached blocks back after an out-of-memory error, so a smaller batch fits."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
