"""Merge methods on hand-made tensors, and the chunked composer against the whole-tensor definitions."""

from __future__ import annotations

import pytest
import torch

from registry.errors import ModelError
from search.vectors import CHUNK, Composer, TaskVector, get_method, merge_state, methods
from search.vectors.methods.dare import dare, mask_seed
from search.vectors.methods.ties import trim


def _ties(taus, coefs, density):
    m = get_method("ties")
    opts = m.validate({"density": density})
    prepared = [
        m.prepare(torch.tensor(t), name="w", vector_id=str(i), options=opts) for i, t in enumerate(taus)
    ]
    out = torch.zeros(len(taus[0]))
    m.combine(prepared, coefs, out=out, scratch=m.scratch(len(taus), len(taus[0])), options=opts)
    ref = m.reference(prepared, coefs, options=opts)
    assert torch.equal(out, ref)
    return out.tolist()


def test_registry_and_options():
    assert methods() == ["dare", "task_arithmetic", "ties"]
    with pytest.raises(ModelError, match="unknown merge method 'slerp'"):
        get_method("slerp")
    with pytest.raises(ValueError):  # callers validating input catch ValueError
        get_method("slerp")
    assert get_method("ties").validate(None) == {"density": 0.2}
    assert get_method("dare").validate({"p": "0.3"}) == {"p": 0.3, "seed": 0}
    for name, opts, pattern in [
        ("ties", {"density": 0}, "density must be in"),
        ("ties", {"density": 1.5}, "density must be in"),
        ("dare", {"p": 1.0}, "p must be in"),
        ("dare", {"drop": 0.1}, "unknown option 'drop'"),
        ("task_arithmetic", {"density": 0.1}, "unknown option 'density'"),
    ]:
        with pytest.raises(ModelError, match=pattern):
            get_method(name).validate(opts)


def test_ties_trim_keeps_top_magnitudes():
    assert trim(torch.tensor([3.0, -1.0, 0.5, 0.0]), density=0.5).tolist() == [3.0, -1.0, 0.0, 0.0]
    assert trim(torch.tensor([-2.0, -1.5, 0.1, 4.0]), density=0.5).tolist() == [-2.0, 0.0, 0.0, 4.0]
    assert trim(torch.tensor([1.0, -2.0]), density=1.0).tolist() == [1.0, -2.0]
    assert trim(torch.tensor([1.0, -2.0, 0.5]), density=0.01).tolist() == [0.0, -2.0, 0.0]  # at least one


def test_ties_sign_election_and_disjoint_mean():
    t1, t2 = [3.0, -1.0, 0.5, 0.0], [-2.0, -1.5, 0.1, 4.0]
    # trimmed: [3,-1,0,0] and [-2,0,0,4]; masses [1,-1,0,4]; agreeing means
    assert _ties([t1, t2], [1.0, 1.0], 0.5) == [3.0, -1.0, 0.0, 4.0]
    # lambda scales before the election: [3,-1,0,0] and [-4,0,0,8] -> the negative side wins entry 0
    assert _ties([t1, t2], [1.0, 2.0], 0.5) == [-4.0, -1.0, 0.0, 8.0]
    # density 1: a mean of the agreeing entries, not a sum
    three = [[1.0, 2.0, -3.0], [3.0, -1.0, -1.0], [-1.0, 0.0, 0.0]]
    assert _ties(three, [1.0, 1.0, 1.0], 1.0) == [2.0, 2.0, -2.0]
    # a negative lambda flips a vector before the election
    assert _ties(three, [1.0, -1.0, 1.0], 1.0) == [-2.0, 1.5, -3.0]
    # one vector at density 1 is task arithmetic; a vector at lambda 0 takes no part
    assert _ties([t1], [0.5], 1.0) == [1.5, -0.5, 0.25, 0.0]
    assert _ties([t1, t2], [0.5, 0.0], 1.0) == _ties([t1], [0.5], 1.0)


def test_dare_drops_rescales_and_is_seeded_by_vector_identity():
    tau = torch.ones(20_000)
    gen = torch.Generator().manual_seed(mask_seed(seed=0, vector_id="abc", name="w"))
    out = dare(tau, p=0.75, generator=gen)
    values = set(out.unique().tolist())
    assert values == {0.0, 4.0}
    kept = float((out != 0).float().mean())
    assert kept == pytest.approx(0.25, abs=0.02)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.08)  # rescaling keeps the expectation

    m = get_method("dare")
    opts = m.validate({"p": 0.5, "seed": 7})
    a = m.prepare(tau, name="w", vector_id="abc", options=opts)
    assert torch.equal(a, m.prepare(tau, name="w", vector_id="abc", options=opts))
    assert not torch.equal(a, m.prepare(tau, name="w", vector_id="abd", options=opts))
    assert not torch.equal(a, m.prepare(tau, name="w2", vector_id="abc", options=opts))
    assert not torch.equal(a, m.prepare(tau, name="w", vector_id="abc", options={"p": 0.5, "seed": 8}))
    assert m.prepare(tau, name="w", vector_id="abc", options=m.validate({"p": 0.0})) is tau
    # after the mask, DARE is a weighted sum: positions of other vectors do not change a vector's mask
    out = torch.zeros(4)
    m.combine(
        [torch.tensor([1.0, 0, 2, 0]), torch.tensor([0, 4.0, 2, 0])],
        [0.5, -1.0],
        out=out,
        scratch=None,
        options=opts,
    )
    assert out.tolist() == [0.5, -4.0, -1.0, 0.0]


class _OneTensor(torch.nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n))


@pytest.mark.parametrize(
    "method,options", [("task_arithmetic", None), ("ties", {"density": 0.4}), ("dare", {"p": 0.3})]
)
def test_chunked_composer_matches_whole_tensor_definition(method, options):
    n = 2 * CHUNK + 1234  # crosses chunk boundaries, with a ragged last chunk
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(n, generator=gen)
    vectors = [TaskVector({"w": torch.randn(n, generator=gen)}, vector_id=f"v{i}") for i in range(4)]
    model = _OneTensor(n)
    composer = Composer(model, target={"w": theta}, vectors=vectors, method=method, method_options=options)
    for coefs in ([0.3, -0.2, 0.0, 1.1], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]):
        composer.apply(coefs)
        ref = merge_state(
            target={"w": theta}, vectors=vectors, coefficients=coefs, method=method, method_options=options
        )
        # fp32 sums in another order: within a few ulps of the largest value (here ~8, so ~1e-6)
        assert float((model.w.detach() - ref["w"]).abs().max()) <= 1e-6 * max(
            1.0, float(ref["w"].abs().max())
        )
    assert torch.equal(model.w.detach(), theta)  # all-zero coefficients restore the target exactly
