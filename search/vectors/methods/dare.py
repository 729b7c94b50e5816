"""DARE (Yu et al., "Language Models are Super Mario"): drop and rescale, then a weighted sum.

Definition: each entry of tau_i is dropped with probability `p` by a seeded Bernoulli mask and the kept
entries are rescaled by 1/(1-p), so the expectation is tau_i; then combine = sum_i lambda_i dare(tau_i).

The mask of tensor `name` of vector `i` comes from a generator seeded by (`seed`, the vector's id, the
tensor name), not by the vector's position, so the same ingredient is masked identically whichever
other vectors it is combined with (a leaderboard row rebuilds exactly). The mask does not depend on
the coefficients, so it is applied once when a composer is built and `combine` is the linear sum.

Options: `p` (drop probability, 0 <= p < 1, default 0.9), `seed` (default 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from registry.errors import ModelError
from search.vectors.methods.base import MergeMethod


def mask_seed(*, seed: int, vector_id: str, name: str) -> int:
    """The generator seed of one tensor's mask (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}\0{vector_id}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def dare(tau: torch.Tensor, *, p: float, generator: torch.Generator) -> torch.Tensor:
    """Drop entries of `tau` with probability `p` and rescale the rest by 1/(1-p) (new fp32 tensor)."""
    keep = torch.rand(tau.shape, generator=generator) >= p
    return torch.where(keep, tau.float() / (1.0 - p), torch.zeros((), dtype=torch.float32))


class Dare(MergeMethod):
    """Drop-and-rescale each vector with a seeded mask, then a weighted sum."""

    name = "dare"
    linear = True
    defaults = {"p": 0.9, "seed": 0}

    def validate(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        opts = super().validate(options)
        try:
            opts["p"], opts["seed"] = float(opts["p"]), int(opts["seed"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"merge method dare: bad option value ({exc})") from exc
        if not 0.0 <= opts["p"] < 1.0:
            raise ModelError(f"merge method dare: p must be in [0, 1), got {opts['p']}")
        return opts

    def prepare(
        self, tau: torch.Tensor, *, name: str, vector_id: str, options: Mapping[str, Any]
    ) -> torch.Tensor:
        if options["p"] == 0.0:
            return tau
        gen = torch.Generator().manual_seed(mask_seed(seed=options["seed"], vector_id=vector_id, name=name))
        return dare(tau, p=options["p"], generator=gen)
