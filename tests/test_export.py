"""`taskvec merge` and `search.export` end to end: real checkpoints, the real CLI, transformers reloading."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM

from registry.compat import shape_config
from registry.errors import ModelError, TaskvecError
from registry.pins import pin
from registry.sources.local import content_sha
from registry.sync import sync
from search.export import (
    Recipe,
    Ref,
    export_merged,
    merge,
    parse_addition,
    parse_options,
    reproduce,
)
from search.scoring import Scorer, load_seq2seq
from search.tasks import load_split
from search.vectors import Composer, TaskVector
from tests.t5_repos import make_base, make_finetune, new_t5, save_repo

torch.set_num_threads(1)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from search.cli.app import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
    )


@pytest.fixture(params=("original", "v1_1"))
def merge_inputs(request, tmp_path):
    """(family, base, target, c1, c2): a base of either T5 family, a target and two candidates."""
    base = make_base(tmp_path, request.param)
    target = make_finetune(base, tmp_path / "target", seed=1)
    c1 = make_finetune(base, tmp_path / "c1", seed=2, scale=0.2)
    c2 = make_finetune(base, tmp_path / "c2", seed=3, scale=0.2)
    return request.param, base, target, c1, c2


def _independent(base: Path, target: Path, adds: list[tuple[Path, float]]) -> dict[str, torch.Tensor]:
    """theta_T + sum lambda_i (theta_i - theta_base), straight from the files in float64."""
    theta_b = load_file(str(base / "model.safetensors"))
    out = {k: v.double() for k, v in load_file(str(target / "model.safetensors")).items()}
    for folder, coef in adds:
        theta_i = load_file(str(folder / "model.safetensors"))
        for k in out:
            out[k] += coef * (theta_i[k].double() - theta_b[k].double())
    return out


@pytest.mark.slow
def test_merge_cli_equals_independent_sum_loads_and_rebuilds_exactly(merge_inputs, tmp_path):
    family, base, target, c1, c2 = merge_inputs
    out = tmp_path / "merged"
    adds = [(c1, 0.7), (c2, -0.4)]
    if family == "original":  # the real command once; the function it wraps for the other family
        res = run_cli(
            "merge", "--base", base, "--target", target, *[f"--add={p}={c}" for p, c in adds], "--out", out
        )
        assert res.returncode == 0, res.stderr
    else:
        merge(base=str(base), target=str(target), additions=[(str(p), c) for p, c in adds], out=out)
    merged = load_file(str(out / "model.safetensors"))
    expect = _independent(base, target, [(c1, 0.7), (c2, -0.4)])
    assert ("lm_head.weight" in merged) == (family == "v1_1")
    worst = max(float((merged[k].double() - expect[k]).abs().max()) for k in merged)
    assert worst <= 1e-5
    assert (
        float(
            (merged["shared.weight"] - load_file(str(target / "model.safetensors"))["shared.weight"])
            .abs()
            .max()
        )
        > 1e-3
    )

    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert (model.lm_head.weight is model.shared.weight) == (family == "original")
    for name, param in model.state_dict().items():
        key = (
            "shared.weight"
            if name.endswith("embed_tokens.weight") or (name == "lm_head.weight" and family == "original")
            else name
        )
        assert torch.equal(param, merged[key]), name

    recipe = Recipe.load(out / "recipe.yaml")
    base_pin, target_pin = pin(str(base)), pin(str(target))
    # every reference records where it was read from: a folder named by path is its own source
    assert recipe.base == Ref(repo_id=base_pin.repo_id, revision=base_pin.revision, source=str(base))
    assert recipe.target == Ref(repo_id=target_pin.repo_id, revision=target_pin.revision, source=str(target))
    assert [(i.repo_id, i.coefficient) for i in recipe.ingredients] == [(str(c1), 0.7), (str(c2), -0.4)]
    assert all(len(i.revision) == 40 and i.source == i.repo_id for i in recipe.ingredients)
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    # folders are no Hub repos: the Hub's `base_model` would reject their paths
    assert "base_model" not in front and {"taskvec", "task-arithmetic", "merge"} <= set(front["tags"])
    for ing in recipe.ingredients:
        assert f"| ingredient | {ing.repo_id} | {ing.revision} | {ing.source} | {ing.coefficient!r} |" in card
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert kit["merge_method"] == "task_arithmetic" and kit["base_model"] == str(base)
    assert [m["parameters"]["weight"] for m in kit["models"]] == [1.0, 0.7, -0.4]
    assert kit["models"][0]["model"] == str(target)
    assert (out / "tokenizer.json").read_bytes() == (target / "tokenizer.json").read_bytes()

    again = tmp_path / "again"
    if family == "original":
        res = run_cli("merge", "--recipe", out / "recipe.yaml", "--out", again)
        assert res.returncode == 0, res.stderr
    else:
        reproduce(recipe_path=out / "recipe.yaml", out=again)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    for name in files:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


@pytest.mark.parametrize("method,options", [("ties", {"density": 0.5}), ("dare", {"p": 0.3, "seed": 5})])
def test_ties_and_dare_exports_record_options_and_rebuild(tmp_path, method, options):
    base = make_base(tmp_path, "original")
    target = make_finetune(base, tmp_path / "target", seed=1)
    c1 = make_finetune(base, tmp_path / "c1", seed=2)
    out, recipe = merge(
        base=str(base),
        target=str(target),
        additions=[(str(c1), 0.8)],
        out=tmp_path / "m",
        method=method,
        method_options=options,
    )
    assert recipe.method == method and recipe.method_options == options
    assert not (out / "mergekit.yaml").exists()  # no mergekit equivalent with the same weights
    assert "No `mergekit.yaml`" in (out / "README.md").read_text()
    again = export_merged(recipe=Recipe.load(out / "recipe.yaml"), out=tmp_path / "m2")
    assert (out / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    plain, _ = merge(base=str(base), target=str(target), additions=[(str(c1), 0.8)], out=tmp_path / "p")
    assert (plain / "model.safetensors").read_bytes() != (out / "model.safetensors").read_bytes()


def test_merge_errors_are_one_line_and_write_nothing(tmp_path):
    base = make_base(tmp_path, "original")
    target = make_finetune(base, tmp_path / "target", seed=1)
    c1 = make_finetune(base, tmp_path / "c1", seed=2)
    wide = tmp_path / "wide"
    save_repo(new_t5(seed=3, d_model=48), wide)
    nan = make_finetune(base, tmp_path / "nan", seed=4)
    state = load_file(str(nan / "model.safetensors"))
    state["shared.weight"][0, 0] = float("nan")
    save_file(state, str(nan / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    cases = [
        (dict(target=wide, additions=[(c1, 1.0)]), "does not match the base .*d_model"),
        (dict(target=target, additions=[(wide, 1.0)]), "does not match the base"),
        (dict(target=target, additions=[(nan, 1.0)]), "shared.weight has NaN/inf"),
        (dict(target=target, additions=[(tmp_path / "nope", 1.0)]), "no such model folder"),
        (dict(target=target, additions=[], method="slerp"), "unknown merge method 'slerp'"),
        (dict(target=target, additions=[(c1, 1.0)], method="ties", method_options={"density": 2}), "density"),
    ]
    for kwargs, pattern in cases:
        kwargs["additions"] = [(str(p), c) for p, c in kwargs["additions"]]
        with pytest.raises(ModelError, match=pattern) as info:
            merge(base=str(base), target=str(kwargs.pop("target")), out=out, **kwargs)
        assert "\n" not in str(info.value)
        assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    # through the command: one line on stderr, exit status 1, no traceback, nothing written
    for args, pattern in [
        (["--base", base, "--target", wide, "--add", f"{c1}=1"], "does not match the base .*d_model"),
        (["--base", base, "--target", target, "--add", f"{c1}"], "expected REPO_OR_PATH=COEF"),
    ]:
        res = run_cli("merge", *args, "--out", out)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert re.search(pattern, res.stderr) and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not out.exists()

    assert parse_addition("a=b=-1.5") == ("a=b", -1.5)
    with pytest.raises(ModelError, match="finite"):
        parse_addition("x=inf")

    # a recipe whose folder changed since no longer rebuilds silently
    merged, _ = merge(base=str(base), target=str(target), additions=[(str(c1), 0.5)], out=tmp_path / "m")
    (c1 / "README.md").write_text("edited")
    with pytest.raises(ModelError, match="folder changed since it was pinned"):
        reproduce(recipe_path=merged / "recipe.yaml", out=tmp_path / "m2")
    assert parse_options(["density=0.3", "seed=2"]) == {"density": 0.3, "seed": 2}
    # an --out that is not an earlier export is never overwritten
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ModelError, match="not a taskvec export"):
        merge(base=str(base), target=str(target), additions=[], out=other)
    assert (other / "notes.txt").read_text() == "keep"


def _set_config(folder: Path, field: str, value: object) -> None:
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("field", "value"), [("tie_word_embeddings", False), ("relative_attention_max_distance", 64)]
)
def test_merge_refuses_what_the_registry_refuses(tmp_path, field, value):
    """Merge checks the registry's shape fields: one line naming the field, for a target or an ingredient."""
    base = make_base(tmp_path, "original")
    target = make_finetune(base, tmp_path / "target", seed=1)
    c1 = make_finetune(base, tmp_path / "c1", seed=2)
    odd = make_finetune(base, tmp_path / "odd", seed=3)
    for folder in (target, odd):
        _set_config(folder, field, value)
    base_shapes = shape_config(json.loads((base / "config.json").read_text()))
    assert shape_config(json.loads((target / "config.json").read_text()))[field] != base_shapes[field]
    good = make_finetune(base, tmp_path / "good", seed=4)
    out = tmp_path / "out"
    for kwargs in (dict(target=target, additions=[(c1, 1.0)]), dict(target=good, additions=[(odd, 1.0)])):
        with pytest.raises(ModelError, match=f"does not match the base .*config {field}:") as info:
            merge(
                base=str(base),
                target=str(kwargs["target"]),
                additions=[(str(p), c) for p, c in kwargs["additions"]],
                out=out,
            )
        assert "\n" not in str(info.value)
        assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    res = run_cli("merge", "--base", base, "--target", target, "--add", f"{c1}=1", "--out", out)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert re.search(f"does not match the base .*config {field}:", res.stderr), res.stderr
    assert not out.exists()


@pytest.mark.slow
def test_export_round_trip_scores_on_the_zoo(tiny_zoo, tmp_path):
    """A merged pico model, reloaded from its folder, scores exactly as the live composed model did."""
    hub = tiny_zoo / "hub" / "pico"
    base, target = hub / "t5-pico", hub / "t5-pico-sst2"
    cands = [hub / "t5-pico-food-sst2-a", hub / "t5-pico-food-sst2-b"]
    coefs = [0.8, 0.6]
    split = load_split("sst2", split="heldout", data_dir=tiny_zoo / "glue")

    model, tok = load_seq2seq(target)
    scorer = Scorer(model, tok, split)
    before = scorer.score()
    vectors = [TaskVector.from_checkpoints(base=base, finetuned=c) for c in cands]
    Composer(model, target=target, vectors=vectors).apply(coefs)
    live = scorer.score()

    out, _ = merge(
        base=str(base),
        target=str(target),
        additions=list(zip(map(str, cands), coefs, strict=True)),
        out=tmp_path / "m",
    )
    reloaded, tok2 = load_seq2seq(out)
    again = Scorer(reloaded, tok2, split).score()
    assert again.score == live.score and again.metrics == live.metrics
    assert (again.predictions == live.predictions).all()
    assert abs(float((again.margins - live.margins).max())) <= 1e-5
    assert (live.predictions != before.predictions).any()  # the composition really changed the model


@pytest.mark.slow
def test_recipe_of_registry_repo_ids_rebuilds_through_the_registry(tiny_zoo, tmp_path):
    """Recipes naming repo ids (as leaderboard rows do) find their pinned folders through the registry."""
    db_url = f"sqlite:///{tmp_path / 'reg.db'}"
    hub = tiny_zoo / "hub"
    sync(base="pico/t5-pico", source=str(hub), search="food-sst2-a", db_url=db_url, progress=False)
    sync(base="pico/t5-pico", source=str(hub), search="t5-pico-sst2", db_url=db_url, progress=False)

    def ref(name: str) -> dict:
        return {"repo_id": name, "revision": content_sha(hub / name)}

    recipe = Recipe.model_validate(
        {
            "base": ref("pico/t5-pico"),
            "target": ref("pico/t5-pico-sst2"),
            "ingredients": [{**ref("pico/t5-pico-food-sst2-a"), "coefficient": 0.9}],
        }
    )
    by_registry = export_merged(recipe=recipe, out=tmp_path / "reg", db_url=db_url)
    by_path, _ = merge(
        base=str(hub / "pico/t5-pico"),
        target=str(hub / "pico/t5-pico-sst2"),
        additions=[(str(hub / "pico/t5-pico-food-sst2-a"), 0.9)],
        out=tmp_path / "path",
    )
    assert (by_registry / "model.safetensors").read_bytes() == (by_path / "model.safetensors").read_bytes()
    written = Recipe.load(by_registry / "recipe.yaml")
    assert written.same_model(recipe)  # plus where each reference was found: its registry folder
    assert [r.source for r in (written.base, written.target, *written.ingredients)] == [
        str(hub / name) for name in ("pico/t5-pico", "pico/t5-pico-sst2", "pico/t5-pico-food-sst2-a")
    ]
    stale = recipe.model_copy(update={"target": Ref(repo_id="pico/t5-pico-sst2", revision="0" * 40)})
    with pytest.raises(TaskvecError):
        export_merged(recipe=stale, out=tmp_path / "stale", db_url=db_url)
    assert not (tmp_path / "stale").exists()
