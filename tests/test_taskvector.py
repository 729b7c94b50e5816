"""Task vectors and the composer on real tiny T5 checkpoints (both families) saved into tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM

from registry.errors import ModelError
from search.vectors import (
    Composer,
    TaskVector,
    analogy,
    cache_path,
    load_vector,
    merge_state,
    model_parameters,
)
from tests.t5_repos import make_base, make_finetune, new_t5, save_repo

torch.set_num_threads(1)

FAMILIES = ("original", "v1_1")


def load_model(folder: Path):
    return AutoModelForSeq2SeqLM.from_pretrained(folder).eval()


@pytest.fixture(params=FAMILIES)
def family_repos(request, tmp_path):
    """(family, base, target, three candidates): fine-tunes of one base of either T5 family."""
    family = request.param
    base = make_base(tmp_path, family)
    target = make_finetune(base, tmp_path / f"target-{family}", seed=1)
    cands = [make_finetune(base, tmp_path / f"cand{i}-{family}", seed=10 + i) for i in range(3)]
    return family, base, target, cands


def test_identities_zero_and_base_plus_tau_is_finetuned(family_repos):
    family, base, target, cands = family_repos
    tau = TaskVector.from_checkpoints(base=base, finetuned=cands[0])
    assert all(t.dtype == torch.float32 for t in tau.deltas.values())
    assert ("lm_head.weight" in tau.deltas) == (family == "v1_1")
    assert "encoder.embed_tokens.weight" not in tau.deltas  # the tied embedding counts once
    zero = 0 * tau
    assert all(torch.count_nonzero(t) == 0 for t in zero.deltas.values())
    assert tau.norm() > 0

    model = load_model(base)
    tau.apply_to(model, 1.0)
    ft = load_file(str(cands[0] / "model.safetensors"))
    params = model_parameters(model)
    worst = max(float((params[n].detach() - ft[n]).abs().max()) for n in tau.deltas)
    # fp32 rounding of (ft - base) + base: at most one ulp of the largest weight, far below any signal
    assert worst <= 1e-6
    equal = sum(torch.equal(params[n].detach(), ft[n]) for n in tau.deltas)
    assert equal >= len(tau.deltas) - 1  # in practice all tensors come back bit-exact


def test_arithmetic_analogy_sum_and_cosine(family_repos):
    _, base, _, cands = family_repos
    a, b, c = (TaskVector.from_checkpoints(base=base, finetuned=p) for p in cands)
    d = analogy(a=a, b=b, c=c)
    for name in a.deltas:
        expect = c.deltas[name] + (b.deltas[name] - a.deltas[name])
        assert torch.allclose(d.deltas[name], expect, atol=1e-7)
    s = sum([a, b, c])
    s2 = TaskVector.sum([a, b, c])
    n = next(iter(a.deltas))
    assert torch.allclose(s.deltas[n], a.deltas[n] + b.deltas[n] + c.deltas[n], atol=1e-7)
    assert torch.equal(s.deltas[n], s2.deltas[n])
    assert torch.allclose((-a).deltas[n], -a.deltas[n]) and torch.allclose((a - a).deltas[n], torch.zeros(1))
    assert a.cosine(a) == pytest.approx(1.0, abs=1e-9)
    assert a.cosine(-a) == pytest.approx(-1.0, abs=1e-9)
    assert abs(a.cosine(b)) < 0.2  # independent noise: nearly orthogonal
    assert (a + b).cosine(a) == pytest.approx(1 / 2**0.5, abs=0.1)


@pytest.mark.parametrize(
    "method,options", [("task_arithmetic", None), ("ties", {"density": 0.3}), ("dare", {"p": 0.5, "seed": 3})]
)
def test_composer_equals_scratch_merge_after_many_updates(family_repos, method, options):
    _, base, target, cands = family_repos
    vectors = [TaskVector.from_checkpoints(base=base, finetuned=p) for p in cands]
    model = load_model(target)
    composer = Composer(model, target=target, vectors=vectors, method=method, method_options=options)
    gen = torch.Generator().manual_seed(0)
    first = [0.7, -0.4, 1.3]
    composer.apply(first)
    snapshot = {n: p.detach().clone() for n, p in model_parameters(model).items()}
    for _ in range(60):
        composer.apply((torch.rand(3, generator=gen) * 4 - 2).tolist())
    composer.apply(first)
    params = model_parameters(model)
    assert all(torch.equal(params[n].detach(), snapshot[n]) for n in snapshot)  # no drift at all
    ref = merge_state(
        target=target, vectors=vectors, coefficients=first, method=method, method_options=options
    )
    worst = max(float((params[n].detach() - ref[n]).abs().max()) for n in ref)
    assert worst <= 1e-6
    if model.lm_head.weight is model.shared.weight:
        assert "lm_head.weight" not in ref  # tied: updated once, through the embedding
    composer.apply([0.0, 0.0, 0.0])
    tgt = load_file(str(target / "model.safetensors"))
    assert all(torch.equal(params[n].detach(), tgt[n]) for n in ref)


def test_composer_rewrites_in_place_without_reallocating(family_repos):
    _, base, target, cands = family_repos
    vectors = [TaskVector.from_checkpoints(base=base, finetuned=p) for p in cands[:2]]
    model = load_model(target)
    ptrs = {n: p.data_ptr() for n, p in model_parameters(model).items()}
    composer = Composer(model, target=target, vectors=vectors)
    composer.apply([0.5, 0.5])
    assert {n: p.data_ptr() for n, p in model_parameters(model).items()} == ptrs
    with pytest.raises(ModelError, match="expected 2 coefficients"):
        composer.apply([1.0])
    with pytest.raises(ModelError, match="finite"):
        composer.apply([float("nan"), 1.0])


def test_sharded_and_pickle_checkpoints_give_the_same_vector(tmp_path):
    base = make_base(tmp_path, "original")
    ft = make_finetune(base, tmp_path / "ft", seed=4)
    tau = TaskVector.from_checkpoints(base=base, finetuned=ft)

    sharded = tmp_path / "sharded"
    load_model(ft).save_pretrained(sharded, max_shard_size="20KB")
    shutil.copy(ft / "tokenizer.json", sharded / "tokenizer.json")
    assert (sharded / "model.safetensors.index.json").is_file()
    tau_sharded = TaskVector.from_checkpoints(base=base, finetuned=sharded)

    pickled = tmp_path / "pickled"
    shutil.copytree(ft, pickled)
    torch.save(load_file(str(ft / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    tau_pickled = TaskVector.from_checkpoints(base=base, finetuned=pickled)
    for name, t in tau.deltas.items():
        assert torch.equal(t, tau_sharded.deltas[name])
        assert torch.equal(t, tau_pickled.deltas[name])


def _rewrite(folder: Path, edit) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_bad_checkpoints_give_one_clear_error(tmp_path):
    base = make_base(tmp_path, "original")
    wi = "encoder.block.0.layer.1.DenseReluDense.wi.weight"

    def broken(name, edit):
        folder = make_finetune(base, tmp_path / name, seed=5)
        _rewrite(folder, edit)
        return folder

    cases = {
        "shape": (broken("shape", lambda s: s.__setitem__(wi, torch.zeros(3, 3))), f"{wi} has shape"),
        "missing": (broken("missing", lambda s: s.pop(wi)), f"missing tensor {wi}"),
        "extra": (
            broken("extra", lambda s: s.__setitem__("classifier.weight", torch.zeros(2, 32))),
            "extra tensor classifier.weight",
        ),
        "nan": (broken("nan", lambda s: s[wi].__setitem__((0, 0), float("nan"))), f"{wi} has NaN/inf"),
        "inf": (broken("inf", lambda s: s[wi].__setitem__((0, 0), float("inf"))), f"{wi} has NaN/inf"),
    }
    other = tmp_path / "other-base"
    save_repo(new_t5(seed=3, d_model=48), other)
    cases["base"] = (other, "does not match the base .* d_model")
    gated = tmp_path / "gated"
    save_repo(new_t5(seed=3, feed_forward_proj="gated-gelu"), gated)
    cases["family"] = (gated, "feed_forward_proj")
    cut = make_finetune(base, tmp_path / "cut", seed=6)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (cut, "model.safetensors")
    for name, (folder, pattern) in cases.items():
        with pytest.raises(ModelError, match=pattern) as info:
            TaskVector.from_checkpoints(base=base, finetuned=folder)
        message = str(info.value)
        assert "\n" not in message and str(folder) in message, name


def test_composer_rejects_vectors_of_another_shape(tmp_path):
    base = make_base(tmp_path, "original")
    target = make_finetune(base, tmp_path / "target", seed=1)
    tau = TaskVector.from_checkpoints(base=base, finetuned=make_finetune(base, tmp_path / "c", seed=2))
    bad = TaskVector({**tau.deltas, "shared.weight": torch.zeros(5, 5)}, vector_id="bad")
    with pytest.raises(ModelError, match="shared.weight has shape"):
        Composer(load_model(target), target=target, vectors=[bad])
    fewer = TaskVector({k: v for k, v in tau.deltas.items() if k != "shared.weight"}, vector_id="few")
    with pytest.raises(ModelError, match="shared.weight is not in the vector"):
        Composer(load_model(target), target=target, vectors=[fewer])
    with pytest.raises(ModelError, match="unknown merge method 'nope'"):
        Composer(load_model(target), target=target, vectors=[tau], method="nope")


def test_vector_cache_mmap_bf16_and_corruption(tmp_path):
    base = make_base(tmp_path, "v1_1")
    cand = make_finetune(base, tmp_path / "cand", seed=7)
    direct = TaskVector.from_checkpoints(base=base, finetuned=cand, vector_id="c" * 40)
    cache = tmp_path / "cache"
    kw = dict(
        base_dir=base,
        base_revision="b" * 40,
        candidate_dir=cand,
        candidate_revision="c" * 40,
        cache_dir=cache,
    )
    v1 = load_vector(**kw)
    path = cache_path(
        cache_dir=cache, base_revision="b" * 40, candidate_revision="c" * 40, dtype=torch.float32
    )
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    assert all(torch.equal(v1.deltas[n], t) for n, t in direct.deltas.items())

    # a hit reads only the cache: the candidate folder is not needed any more
    moved = tmp_path / "moved"
    cand.rename(moved)
    v2 = load_vector(**kw)
    assert all(torch.equal(v2.deltas[n], t) for n, t in direct.deltas.items())
    assert not v2.deltas["shared.weight"].untyped_storage().resizable()  # a view of the mapped file

    moved.rename(cand)
    half = load_vector(**kw, dtype=torch.bfloat16)
    assert half.deltas["shared.weight"].dtype == torch.bfloat16
    for name, t in direct.deltas.items():
        assert torch.allclose(half.deltas[name].float(), t, rtol=2**-8, atol=0)

    path.write_bytes(path.read_bytes()[:100])  # a damaged entry is rebuilt, not trusted
    v3 = load_vector(**kw)
    assert all(torch.equal(v3.deltas[n], t) for n, t in direct.deltas.items())


def test_composer_with_bf16_vectors_and_a_bf16_model(tmp_path):
    base = make_base(tmp_path, "original")
    target = make_finetune(base, tmp_path / "target", seed=1)
    cands = [make_finetune(base, tmp_path / f"c{i}", seed=20 + i) for i in range(2)]
    kw = dict(base_dir=base, base_revision="b" * 40, cache_dir=tmp_path / "cache")
    fp32 = [load_vector(**kw, candidate_dir=c, candidate_revision=f"{i}" * 40) for i, c in enumerate(cands)]
    bf16 = [
        load_vector(**kw, candidate_dir=c, candidate_revision=f"{i}" * 40, dtype=torch.bfloat16)
        for i, c in enumerate(cands)
    ]
    coefs = [0.6, -0.3]
    ref32 = merge_state(target=target, vectors=fp32, coefficients=coefs)
    ref16 = merge_state(target=target, vectors=bf16, coefficients=coefs)

    model = load_model(target)
    Composer(model, target=target, vectors=bf16).apply(coefs)
    params = model_parameters(model)
    assert max(float((params[n].detach() - ref16[n]).abs().max()) for n in ref16) <= 1e-6
    # bf16 storage moves weights by at most ~2^-8 of each delta's size
    tau_max = max(float(t.abs().max()) for v in fp32 for t in v.deltas.values())
    assert max(float((params[n].detach() - ref32[n]).abs().max()) for n in ref32) <= 2**-8 * tau_max

    half = load_model(target).to(torch.bfloat16)
    Composer(half, target=target, vectors=fp32).apply(coefs)
    hp = model_parameters(half)
    assert all(hp[n].dtype == torch.bfloat16 for n in hp)
    assert all(torch.equal(hp[n].detach(), ref32[n].to(torch.bfloat16)) for n in ref32)  # rounded once
