"""TIES merging (Yadav et al., "Resolving Interference When Merging Models"), per tensor.

Definition, for each tensor:
1. trim: keep each tau_i's top-`density` fraction of entries by magnitude (ties at the threshold kept),
   zero the rest; per tensor, as mergekit does (coefficient-independent, so done once per vector);
2. weight: w_i = lambda_i * trimmed tau_i (negative lambdas flip a vector before the election);
3. elect: the sign of sum_i w_i per entry (the side with the larger total mass);
4. disjoint mean: the mean of the w_i whose sign agrees with the elected one, over those agreeing
   entries only (entries where no vector agrees stay 0).

combine = that disjoint mean. With one vector and density 1 it equals task arithmetic; with K equal
vectors at lambda it gives lambda * tau (a mean, not K lambda tau). Vectors at lambda 0 take no part.
The `mergekit.yaml` export is skipped for TIES: mergekit's `ties` normalises by the agreeing weights
and applies lambda differently, so its YAML would not reproduce this model.

Options: `density` (0 < density <= 1, default 0.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from registry.errors import ModelError
from search.vectors.methods.base import MergeMethod


def trim(tau: torch.Tensor, *, density: float) -> torch.Tensor:
    """`tau` with all but its top-`density` fraction of entries (by |value|) set to zero (fp32)."""
    flat = tau.float().reshape(-1)
    n = flat.numel()
    keep = min(n, max(1, math.ceil(density * n)))
    if keep >= n:
        return tau.float()
    threshold = flat.abs().kthvalue(n - keep + 1).values
    return torch.where(flat.abs() >= threshold, flat, torch.zeros((), dtype=torch.float32)).view(tau.shape)


def disjoint_mean(weighted: torch.Tensor) -> torch.Tensor:
    """Elect per-entry signs over rows of `weighted` [K, n] and average the agreeing nonzero entries."""
    elected = torch.sign(weighted.sum(0))
    agree = (torch.sign(weighted) == elected) & (weighted != 0)
    total = torch.where(agree, weighted, torch.zeros((), dtype=weighted.dtype)).sum(0)
    count = agree.sum(0).clamp_(min=1)
    return total / count


class Ties(MergeMethod):
    """Trim, elect sign, disjoint mean (see the module docstring)."""

    name = "ties"
    linear = False
    defaults = {"density": 0.2}

    def validate(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        opts = super().validate(options)
        try:
            opts["density"] = float(opts["density"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"merge method ties: bad density ({exc})") from exc
        if not 0.0 < opts["density"] <= 1.0:
            raise ModelError(f"merge method ties: density must be in (0, 1], got {opts['density']}")
        return opts

    def prepare(
        self, tau: torch.Tensor, *, name: str, vector_id: str, options: Mapping[str, Any]
    ) -> torch.Tensor:
        return trim(tau, density=options["density"])

    def scratch(self, k: int, chunk: int) -> torch.Tensor:
        return torch.empty((k, chunk), dtype=torch.float32)

    def combine(
        self,
        chunks: Sequence[torch.Tensor],
        coefs: Sequence[float],
        *,
        out: torch.Tensor,
        scratch: torch.Tensor,
        options: Mapping[str, Any],
    ) -> None:
        n = out.numel()
        weighted = scratch[: len(chunks), :n]
        for row, tau, coef in zip(weighted, chunks, coefs, strict=True):
            torch.mul(tau, coef, out=row)
        out.add_(disjoint_mean(weighted))

    def reference(
        self, taus: Sequence[torch.Tensor], coefs: Sequence[float], *, options: Mapping[str, Any]
    ) -> torch.Tensor:
        # The definition written as positive and negative masses, independently of `disjoint_mean`.
        weighted = torch.stack([c * t.float().reshape(-1) for t, c in zip(taus, coefs, strict=True)])
        zero = torch.zeros((), dtype=torch.float32)
        pos, neg = weighted > 0, weighted < 0
        pos_mean = torch.where(pos, weighted, zero).sum(0) / pos.sum(0).clamp(min=1)
        neg_mean = torch.where(neg, weighted, zero).sum(0) / neg.sum(0).clamp(min=1)
        mass = weighted.sum(0)
        return torch.where(mass > 0, pos_mean, torch.where(mass < 0, neg_mean, zero))
