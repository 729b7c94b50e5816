"""What every merge method shares: options with defaults, coefficient-independent preparation, a fused
streaming combine, and a whole-tensor reference the tests compare against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from registry.errors import ModelError


class UnknownMethodError(ModelError, ValueError):
    """A merge method name that is not registered (also a ValueError for callers validating input)."""


class MergeMethod:
    """Base class: a linear weighted sum with no options; subclasses override what differs."""

    name = "base"
    #: True when combine is a weighted sum of prepared vectors (no scratch, no allocation).
    linear = True
    #: option name -> default value
    defaults: Mapping[str, Any] = {}

    def validate(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Options with defaults filled in.

        Raises:
            ModelError: for an unknown option or a value out of range.
        """
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise ModelError(f"merge method {self.name}: unknown option {unknown[0]!r} (allowed: {allowed})")
        return {**self.defaults, **options}

    def prepare(
        self, tau: torch.Tensor, *, name: str, vector_id: str, options: Mapping[str, Any]
    ) -> torch.Tensor:
        """Coefficient-independent preprocessing of one tensor of one vector (default: none)."""
        return tau

    def scratch(self, k: int, chunk: int) -> Any:
        """Buffers `combine` reuses across calls (default: none)."""
        return None

    def combine(
        self,
        chunks: Sequence[torch.Tensor],
        coefs: Sequence[float],
        *,
        out: torch.Tensor,
        scratch: Any,
        options: Mapping[str, Any],
    ) -> None:
        """`out += sum_i coefs[i] * chunks[i]`, one streaming pass per vector, no allocation."""
        for tau, coef in zip(chunks, coefs, strict=True):
            out.add_(tau, alpha=coef)

    def compose(
        self,
        base: torch.Tensor,
        chunks: Sequence[torch.Tensor],
        coefs: Sequence[float],
        *,
        out: torch.Tensor,
        scratch: Any,
        options: Mapping[str, Any],
    ) -> None:
        """`out = base + combine(chunks; coefs)`; linear methods fuse the copy with the first vector."""
        if self.linear and chunks:
            torch.add(base, chunks[0], alpha=coefs[0], out=out)
            self.combine(chunks[1:], coefs[1:], out=out, scratch=scratch, options=options)
            return
        out.copy_(base)
        if chunks:
            self.combine(chunks, coefs, out=out, scratch=scratch, options=options)

    def reference(
        self, taus: Sequence[torch.Tensor], coefs: Sequence[float], *, options: Mapping[str, Any]
    ) -> torch.Tensor:
        """Whole-tensor combination as a new fp32 tensor (the plain definition, for tests)."""
        stacked = torch.stack([t.float() for t in taus])
        return (torch.tensor(coefs, dtype=torch.float32)[:, None] * stacked).sum(0)
