"""Out-of-memory back-off of the scorers: what each device learned this process, said once.

A batch that runs out of accelerator memory halves its scorer's limits and is retried in smaller
batches (`search.scoring.scorer`); the limits that fit are remembered per device, so scorers created
later on it start there instead of failing again, and the back-off is said once per device on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

before_batch: Callable[[int, int], None] | None = None
"""Called with (examples, padded input tokens) before each batch runs; None in use. A test sets it to
raise `torch.OutOfMemoryError` to exercise the back-off where there is no GPU."""

# Per device (`str(device)`): the smallest (batch_tokens, max_batch) a batch had to be cut to.
_LEARNED: dict[str, tuple[int, int]] = {}
_SAID: set[str] = set()


def learned(device: torch.device) -> tuple[int, int] | None:
    """(batch_tokens, max_batch) that `device` had to back off to in this process, or None."""
    return _LEARNED.get(str(device))


def record(device: torch.device, *, batch_tokens: int, max_batch: int) -> None:
    """Remember limits `device` had to back off to, and say so (once per device, one stderr line)."""
    key = str(device)
    old = _LEARNED.get(key, (batch_tokens, max_batch))
    _LEARNED[key] = (min(old[0], batch_tokens), min(old[1], max_batch))
    if key not in _SAID:
        _SAID.add(key)
        print(
            f"note: out of memory on {device}: batches halved (now at most {max_batch} examples, "
            f"{batch_tokens} tokens) and retried; said once",
            file=sys.stderr,
            flush=True,
        )


def forget() -> None:
    """Forget what every device learned (and that it was said)."""
    _LEARNED.clear()
    _SAID.clear()
