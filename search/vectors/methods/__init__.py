"""Ways to combine task vectors, one module each, behind a registry by name.

Every method computes theta = theta_T + combine({tau_i}, {lambda_i}) and splits its work in two:

- `prepare(tau)`: what does not depend on the coefficients (TIES trimming, DARE's seeded mask), done
  once per vector when a `Composer` is built;
- `combine(chunks, coefs, out=...)`: adds the combination of prepared chunks to `out` in place, for
  one chunk of one tensor; elementwise, so the composer can stream tensors in cache-sized chunks.

`reference(taus, coefs)` is an independent whole-tensor implementation that tests compare against.

Methods: `task_arithmetic` (weighted sum), `ties` (trim, elect sign, disjoint mean), `dare`
(drop and rescale, then weighted sum). Their options are recorded in every recipe.
"""

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


def _registry() -> dict[str, MergeMethod]:
    from search.vectors.methods.dare import Dare
    from search.vectors.methods.task_arithmetic import TaskArithmetic
    from search.vectors.methods.ties import Ties

    return {m.name: m for m in (TaskArithmetic(), Ties(), Dare())}


def methods() -> list[str]:
    """Registered method names."""
    return sorted(_registry())


def get_method(name: str) -> MergeMethod:
    """The merge method called `name`.

    Raises:
        UnknownMethodError: (a ModelError and ValueError) for an unknown name.
    """
    registry = _registry()
    if name not in registry:
        raise UnknownMethodError(f"unknown merge method {name!r} (choose from {', '.join(sorted(registry))})")
    return registry[name]
