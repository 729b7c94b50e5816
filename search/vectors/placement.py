"""Where the composer keeps the task vectors: on the model's device when they fit, else streamed.

On the CPU (and MPS, whose memory is the host's) the vectors simply live there. On a CUDA device they
are copied onto it when they fit beside what scoring needs; otherwise they stay in pinned host memory, laid
out in chunk-major blocks so that each chunk is one contiguous asynchronous copy, and stream onto the device
chunk by chunk at every composition, overlapping the copy of the next chunk with the arithmetic of this one.
"""

from __future__ import annotations

from typing import Literal

import torch

Home = Literal["device", "streamed"]

# Scoring's activations, the cache of the allocator and other processes need room too: the vectors go on
# the GPU only if at least this much of its memory (and 2 GiB) stays free after them.
HEADROOM_FRACTION = 0.25
HEADROOM_MIN_BYTES = 2 << 30


def vector_home(
    nbytes: int, *, device: torch.device, memory: tuple[int, int] | None = None, force: Home | None = None
) -> Home:
    """`device` when `nbytes` of vectors fit on `device` with headroom to spare, else `streamed`.

    Args:
        nbytes: the stacked vectors' size.
        device: the device of the model's parameters.
        memory: `(free, total)` bytes of the device (None: asked of CUDA); tests pass their own.
        force: a home chosen by the caller (`streamed` also works on the CPU, for tests of that path).
    """
    if force is not None:
        return force
    if device.type != "cuda":
        return "device"
    free, total = memory if memory is not None else torch.cuda.mem_get_info(device)
    headroom = max(HEADROOM_MIN_BYTES, int(HEADROOM_FRACTION * total))
    return "device" if nbytes <= free - headroom else "streamed"


def host_block(shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An empty host tensor for vectors streamed to `device`: pinned where the device is CUDA (so the
    copy is asynchronous and at full bus speed), ordinary memory otherwise."""
    return torch.empty(shape, dtype=dtype, pin_memory=device.type == "cuda")


class Stager:
    """Double-buffered host-to-device copies of chunks for one composition, overlapped with compute.

    `stage(block, rows)` starts copying `block[rows]` (a pinned host block) into the next of two device
    buffers on a side stream and returns that buffer once the compute stream may read it; the copy after
    it waits until the compute that used its buffer before has finished. On a non-CUDA device it returns
    the block's rows as they are.
    """

    def __init__(self, *, device: torch.device, shape: tuple[int, int], dtype: torch.dtype) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.turn = 0
        if self.cuda:
            # Flat, so that every staged `[r, m]` chunk is a contiguous view (one plain copy).
            self.buffers = [torch.empty(shape[0] * shape[1], dtype=dtype, device=device) for _ in range(2)]
            self.copy_stream = torch.cuda.Stream(device=device)
            # `freed[i]` is recorded after the compute that read buffer i; waiting on an event never
            # recorded returns at once, so the first two copies start immediately.
            self.freed = [torch.cuda.Event() for _ in range(2)]
            self.ready = [torch.cuda.Event() for _ in range(2)]

    def stage(self, block: torch.Tensor, rows: slice) -> torch.Tensor:
        """The device copy of `block[rows]` (shape `[r, m]`), ready for the current stream."""
        src = block[rows]
        if not self.cuda:
            return src
        i = self.turn
        self.turn ^= 1
        dst = self.buffers[i][: src.numel()].view(src.shape)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(self.freed[i])
            dst.copy_(src, non_blocking=True)
            self.ready[i].record(self.copy_stream)
        compute.wait_event(self.ready[i])
        return dst

    def release(self) -> None:
        """Mark the buffer returned by the last `stage` as read (call after the compute using it)."""
        if self.cuda:
            self.freed[self.turn ^ 1].record(torch.cuda.current_stream(self.device))
