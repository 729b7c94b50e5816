"""The compiled composition kernel (search/vectors/fused.py) against torch: bf16 and fp16 stacks,
ragged lengths (its SIMD body and scalar tail), fp16 subnormals and infinities, strided rows, subsets, two
threads; the composer's choice of it; and the torch path where no compiler is found."""

from __future__ import annotations

import pytest
import torch

from search.vectors import Composer, TaskVector, fused
from search.vectors.fused import SPLIT_MIN, fused_kernel

pytestmark = pytest.mark.skipif(fused_kernel() is None, reason="no C compiler or no AVX2/FMA/F16C here")


def _reference(theta, stack, rows, coefs):
    return (theta.double() + sum(c * stack[r].double() for r, c in zip(rows, coefs, strict=True))).float()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", [1, 31, 32, 1000, 4099])
def test_kernel_matches_torch(dtype, n):
    gen = torch.Generator().manual_seed(n)
    theta = torch.randn(n, generator=gen)
    # Rows of a wider buffer: the row stride is not n.
    buf = (torch.randn(5, n + 17, generator=gen) * 0.1).to(dtype)
    stack = buf[:, :n]
    for rows, coefs in (([0, 1, 2, 3, 4], [0.3, -0.2, 0.7, 1.1, -0.9]), ([3], [0.8]), ([1, 4], [2.0, -0.5])):
        out = torch.empty(n)
        fused_kernel().compose(
            theta=theta,
            stack=stack,
            rows=torch.tensor(rows, dtype=torch.int64),
            coefs=torch.tensor(coefs, dtype=torch.float32),
            out=out,
        )
        assert torch.allclose(out, _reference(theta, stack, rows, coefs), rtol=0, atol=2e-6), (rows, n)


def test_fp16_special_values_in_the_simd_body_and_the_tail():
    # 40 elements: 32 through the F16C body, 8 through the scalar widening.
    specials = torch.tensor([6e-8, -6e-8, 3e-5, -1e-7, 0.0, -0.0, 65504.0, float("inf")], dtype=torch.float16)
    stack = specials.repeat(5)[None, :]
    theta = torch.zeros(40)
    out = torch.empty(40)
    fused_kernel().compose(
        theta=theta,
        stack=stack,
        rows=torch.tensor([0], dtype=torch.int64),
        coefs=torch.tensor([1.0]),
        out=out,
    )
    assert torch.equal(out, stack[0].float())


def test_two_threads_split_a_large_tensor_exactly():
    n = SPLIT_MIN + 77  # two spans and a ragged end
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(n, generator=gen)
    stack = (torch.randn(3, n, generator=gen) * 0.1).to(torch.bfloat16)
    rows, coefs = torch.tensor([0, 2], dtype=torch.int64), torch.tensor([0.5, -1.5])
    one, two = torch.empty(n), torch.empty(n)
    fused_kernel().compose(theta=theta, stack=stack, rows=rows, coefs=coefs, out=one, threads=1)
    fused_kernel().compose(theta=theta, stack=stack, rows=rows, coefs=coefs, out=two, threads=2)
    assert torch.equal(one, two)


class _Two(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3000))
        self.b = torch.nn.Parameter(torch.zeros(7, 3))


def _vectors(dtype, k=4):
    gen = torch.Generator().manual_seed(2)
    theta = {"w": torch.randn(3000, generator=gen), "b": torch.randn(7, 3, generator=gen)}
    vectors = [
        TaskVector(
            {name: (torch.randn(t.shape, generator=gen) * 0.1).to(dtype) for name, t in theta.items()},
            vector_id=f"v{i}",
        )
        for i in range(k)
    ]
    return theta, vectors


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_composer_uses_the_kernel_for_16_bit_vectors_and_agrees_with_torch(dtype, monkeypatch):
    theta, vectors = _vectors(dtype)
    fast_model, slow_model = _Two(), _Two()
    fast = Composer(fast_model, target=theta, vectors=vectors)
    monkeypatch.setenv("TASKVEC_FUSED", "0")
    slow = Composer(slow_model, target=theta, vectors=vectors)
    assert (fast.path, slow.path) == ("fused", "torch")
    for coefs in ([0.3, -0.2, 0.7, 1.1], [0.0, 0.4, 0.0, 1.3], [0.0, 0.0, 0.9, 0.0]):
        fast.apply(coefs)
        slow.apply(coefs)
        for a, b in ((fast_model.w, slow_model.w), (fast_model.b, slow_model.b)):
            assert torch.allclose(a.detach(), b.detach(), rtol=0, atol=2e-6), coefs


def test_fp32_and_streamed_vectors_and_nonlinear_methods_keep_the_torch_path():
    theta, vectors = _vectors(torch.float32)
    assert Composer(_Two(), target=theta, vectors=vectors).path == "torch"
    theta, vectors = _vectors(torch.bfloat16)
    assert Composer(_Two(), target=theta, vectors=vectors, home="streamed").path == "torch"
    ties = Composer(_Two(), target=theta, vectors=vectors, method="ties", method_options={"density": 0.5})
    assert ties.path == "torch"


def test_without_a_compiler_the_composer_falls_back_to_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "home"))  # nothing compiled there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    fused._load.cache_clear()
    try:
        assert fused_kernel() is None
        theta, vectors = _vectors(torch.bfloat16)
        model = _Two()
        composer = Composer(model, target=theta, vectors=vectors)
        assert composer.path == "torch"
        composer.apply([0.5, 0.0, -0.25, 1.0])
        ref = theta["w"] + 0.5 * vectors[0].deltas["w"].float() - 0.25 * vectors[2].deltas["w"].float()
        assert torch.allclose(model.w.detach(), ref + vectors[3].deltas["w"].float(), rtol=0, atol=2e-6)
        assert not list((tmp_path / "home").rglob("*.so"))
    finally:
        fused._load.cache_clear()
