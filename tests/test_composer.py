"""The fused, device-aware composer against the plain formula, on pico tensors: every method, vector dtype,
model dtype and home (in place, streamed per chunk), subsets with gaps, and where the vectors live."""

from __future__ import annotations

import itertools

import pytest
import torch

from search.vectors import Composer, TaskVector, merge_state
from search.vectors.placement import HEADROOM_MIN_BYTES, vector_home

N = 1000  # with chunk=96: ten full chunks and a ragged one


class _TwoTensors(torch.nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(N, dtype=dtype))
        self.b = torch.nn.Parameter(torch.zeros(7, 3, dtype=dtype))


def _world(k: int, vector_dtype: torch.dtype, *, stacked: bool = False):
    gen = torch.Generator().manual_seed(3)
    theta = {"w": torch.randn(N, generator=gen), "b": torch.randn(7, 3, generator=gen)}
    if stacked:  # the rows of one buffer per tensor, as a caller holding a [K, n] stack passes them
        rows = {
            name: (torch.randn(k, t.numel(), generator=gen) * 0.1).to(vector_dtype)
            for name, t in theta.items()
        }
        deltas = [{name: rows[name][i].view(t.shape) for name, t in theta.items()} for i in range(k)]
    else:
        deltas = [
            {name: (torch.randn(t.shape, generator=gen) * 0.1).to(vector_dtype) for name, t in theta.items()}
            for _ in range(k)
        ]
    return theta, [TaskVector(d, vector_id=f"v{i}") for i, d in enumerate(deltas)]


def _plain(theta, vectors, coefs):
    """theta_T + sum_i lambda_i tau_i, written out in fp64."""
    return {
        name: (
            t.double() + sum(c * v.deltas[name].double() for v, c in zip(vectors, coefs, strict=True))
        ).float()
        for name, t in theta.items()
    }


COEF_SETS = [
    [0.3, -0.2, 0.7, 1.1, 0.5, -0.9],  # all active
    [0.0, 0.4, 0.0, 0.0, 0.0, 1.3],  # a gap too long to bridge
    [0.6, 0.0, 0.8, 0.0, 0.0, 0.0],  # a bridged gap
    [0.0, 0.0, 0.0, 0.9, 0.0, 0.0],  # one vector
]


@pytest.mark.parametrize(
    "vector_dtype,home,stacked",
    list(itertools.product([torch.float32, torch.bfloat16], ["device", "streamed"], [False, True])),
)
def test_task_arithmetic_matches_plain_formula(vector_dtype, home, stacked):
    theta, vectors = _world(6, vector_dtype, stacked=stacked)
    model = _TwoTensors(torch.float32)
    composer = Composer(model, target=theta, vectors=vectors, home=home, chunk=96)
    assert composer.home == home
    for coefs in COEF_SETS:
        composer.apply(coefs)
        ref = _plain(theta, vectors, coefs)
        for name, p in (("w", model.w), ("b", model.b)):
            assert torch.allclose(p.detach(), ref[name], rtol=0, atol=2e-6), (coefs, name)
    composer.apply([0.0] * 6)
    assert torch.equal(model.w.detach(), theta["w"]) and torch.equal(model.b.detach(), theta["b"])


def test_stacked_rows_are_used_in_place():
    theta, vectors = _world(3, torch.bfloat16, stacked=True)
    composer = Composer(_TwoTensors(torch.float32), target=theta, vectors=vectors)
    stacks = {e.stack.data_ptr() for e in composer._entries}
    assert {v.deltas["w"].data_ptr() for v in vectors[:1]} <= stacks  # no copy of the K vectors
    assert composer.storage == torch.bfloat16  # and no widening to fp32 in memory


@pytest.mark.parametrize("home", ["device", "streamed"])
@pytest.mark.parametrize("method,options", [("ties", {"density": 0.4}), ("dare", {"p": 0.3})])
def test_other_methods_match_their_definitions(method, options, home):
    theta, vectors = _world(6, torch.float32)
    model = _TwoTensors(torch.float32)
    composer = Composer(
        model, target=theta, vectors=vectors, method=method, method_options=options, home=home, chunk=96
    )
    for coefs in COEF_SETS:
        composer.apply(coefs)
        ref = merge_state(
            target=theta, vectors=vectors, coefficients=coefs, method=method, method_options=options
        )
        assert torch.allclose(model.w.detach(), ref["w"], rtol=0, atol=2e-6), coefs
        assert torch.allclose(model.b.detach(), ref["b"], rtol=0, atol=2e-6), coefs


@pytest.mark.parametrize("home", ["device", "streamed"])
def test_half_precision_model_is_composed_in_fp32_and_rounded_once(home):
    theta, vectors = _world(6, torch.bfloat16)
    model = _TwoTensors(torch.bfloat16)
    composer = Composer(model, target=theta, vectors=vectors, home=home, chunk=96)
    composer.apply(COEF_SETS[0])
    ref = _plain(theta, vectors, COEF_SETS[0])
    assert torch.equal(model.w.detach(), ref["w"].to(torch.bfloat16))


def test_vectors_go_on_the_gpu_only_with_headroom():
    gib = 1 << 30
    cuda = torch.device("cuda", 0)
    assert vector_home(10 * gib, device=torch.device("cpu")) == "device"
    assert vector_home(10 * gib, device=cuda, memory=(80 * gib, 80 * gib)) == "device"
    # 80 GB card, 25% kept free: 60 GB for vectors at most
    assert vector_home(61 * gib, device=cuda, memory=(80 * gib, 80 * gib)) == "streamed"
    assert vector_home(gib, device=cuda, memory=(HEADROOM_MIN_BYTES + gib - 1, 4 * gib)) == "streamed"
    assert vector_home(gib, device=cuda, memory=(80 * gib, 80 * gib), force="streamed") == "streamed"
