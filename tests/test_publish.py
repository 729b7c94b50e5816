"""Exports that stand alone, and publishing them (issue 15, item 6).

Real pico checkpoints copied from the tiny zoo, a registry synced from them (a folder source, or the
loopback Hub), one leaderboard row with both splits' scores and a held-out interval: the card carries what
the leaderboard knew and the Hub's metadata; `recipe.yaml` rebuilds the folder with no database; `export
--push-to-hub` uploads it through huggingface_hub to the loopback Hub; a non-empty `--out` is refused.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard, snapshot_download
from huggingface_hub import constants as hf_constants

from registry.db import dispose_engines
from registry.errors import TaskvecError
from registry.sources import HubSource
from registry.sources.local import content_sha
from registry.sync import sync
from search.errors import SearchError
from search.export import MANIFEST_FILE, Recipe, export_trial, push_folder, recipe_for, reproduce
from search.export.card import MERGEKIT_DIFFERS, mergekit_yaml, model_card
from search.study import records
from tests.hub_server import WRITE_TOKEN, serve

torch.set_num_threads(1)

BASE, TARGET, CAND = "pico/t5-pico", "pico/t5-pico-sst2", "pico/t5-pico-food-sst2-a"
GAIN_CI = {
    "lo": 0.5,
    "hi": 4.5,
    "gain": 2.5,
    "level": 0.95,
    "resamples": 2000,
    "seed": 0,
    "n": {"sst2": 200},
    "method": "paired-bootstrap-percentile",
}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _row(shas: dict[str, str], **extra) -> dict:
    row = {
        "task": "sst2",
        "study": "sst2-study",
        "trial_number": 7,
        "state": "complete",
        "score_search": 60.0,
        "score_heldout": 56.5,
        "metrics": {"search": {"accuracy": 60.0, "score": 60.0}},
        "target_score_search": 55.0,
        "target_score_heldout": 54.0,
        "target_repo": TARGET,
        "target_revision": shas[TARGET],
        "base_repo": BASE,
        "base_revision": shas[BASE],
        "ingredients": [{"repo_id": CAND, "revision": shas[CAND], "coefficient": 0.5}],
        "method": "task_arithmetic",
        "method_options": {},
        "scorer": {"mode": "rank", "data": "hub", "search_size": 200},
        "split_fingerprints": {"search": "s" * 64, "heldout": "h" * 64},
        "scores": {"sst2": {"search": 60.0, "heldout": 56.5}},
        "objective": "score",
        "constraints": {},
        "pareto": False,
        "examples_scored": 200,
        "worker": "host:1",
        "created": datetime(2026, 1, 1, tzinfo=UTC),
        "gain_ci": GAIN_CI,
    }
    return {**row, **extra}


class World:
    """Three pico repos in a Hub-like folder, a registry of them and one leaderboard row."""

    def __init__(self, root: Path, zoo: Path) -> None:
        self.root, self.hub = root, root / "hub"
        for repo in (BASE, TARGET, CAND):
            shutil.copytree(zoo / "hub" / repo, self.hub / repo)
        self.db = root / "reg.db"
        self.url = f"sqlite:///{self.db}"
        self.shas = {repo: content_sha(self.hub / repo) for repo in (BASE, TARGET, CAND)}

    def register(self, source: str | HubSource, **row) -> None:
        sync(base=BASE, source=source, db_url=self.url, progress=False)
        records.upsert_rows([_row(self.shas, **row)], db_url=self.url)
        dispose_engines()


@pytest.fixture()
def world(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "home"))
    yield World(tmp_path, tiny_zoo)
    dispose_engines()


def test_card_carries_the_row_and_the_hub_metadata(world):
    world.register(str(world.hub))
    out = export_trial(study="sst2-study", trial=7, out=world.root / "E", db_url=world.url)
    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.base_model == [BASE, TARGET, CAND] and data.base_model_relation == "merge"
    assert data.tags[:2] == ["merge", "task-arithmetic"] and "glue-sst2" in data.tags
    assert data.datasets == ["nyu-mll/glue"] and data.library_name == "transformers"
    (result,) = data.eval_results  # the held-out score: the one never used to choose
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == (
        "nyu-mll/glue",
        "sst2",
        "validation",
    )
    assert (result.metric_type, result.metric_value) == ("accuracy", 56.5)
    assert "held-out" in result.metric_name
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == 56.5
    text = card.text
    for expected in (
        "Task `sst2`, study `sst2-study`, trial 7 (`taskvec export --study 'sst2-study#7' --out DIR`)",
        "Search split: 200 examples, a stratified sample of GLUE train",
        "Held-out: GLUE validation",
        "| sst2 | accuracy | search | 60.00 | 55.00 | +5.00 |",
        "| sst2 | accuracy | held-out | 56.50 | 54.00 | +2.50 |",
        "Held-out gain +2.50, 95% interval [+0.50, +4.50] (paired-bootstrap-percentile, 2000 resamples, "
        "examples: sst2 200); it excludes 0.",
        f"| ingredient | {CAND} | {world.shas[CAND]} | {world.hub / CAND} | 0.5 |",
        "`mergekit.yaml` gives the same formula in mergekit.",
    ):
        assert expected in text, expected
    recipe = Recipe.load(out / "recipe.yaml")
    assert recipe.result is not None and recipe.result.gain_ci.lo == 0.5
    assert [r.source for r in (recipe.base, recipe.target, *recipe.ingredients)] == [
        str(world.hub / r) for r in (BASE, TARGET, CAND)
    ]
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {0o644}


def test_card_without_heldout_names_the_search_split_and_ties_differs(world):
    world.register(
        str(world.hub),
        score_heldout=None,
        target_score_heldout=None,
        gain_ci=None,
        scores={"sst2": {"search": 60.0, "heldout": None}},
        method="ties",
        method_options={"density": 0.5},
    )
    out = export_trial(study="sst2-study", out=world.root / "T", db_url=world.url)
    card = ModelCard.load(out / "README.md")
    (result,) = card.data.eval_results
    assert result.dataset_split == "train" and "search split, chosen on it" in result.metric_name
    assert "ties" in card.data.tags
    assert "Held-out gain interval: not computed" in card.text
    assert f"No `mergekit.yaml`: {MERGEKIT_DIFFERS['ties']}" in card.text
    assert not (out / "mergekit.yaml").exists()
    # where our method is plain task arithmetic, mergekit's formula is ours
    recipe = Recipe.load(out / "recipe.yaml")
    assert mergekit_yaml(recipe.model_copy(update={"method_options": {"density": 1.0}})) is not None
    dare = recipe.model_copy(update={"method": "dare", "method_options": {"p": 0.0, "seed": 0}})
    assert yaml.safe_load(mergekit_yaml(dare))["merge_method"] == "task_arithmetic"
    assert mergekit_yaml(dare.model_copy(update={"method_options": {"p": 0.5, "seed": 0}})) is None


def test_recipe_rebuilds_without_the_database(world):
    """The issue: `merge --recipe` without the DB retried the Hub for 27 s and failed."""
    world.register(str(world.hub))
    out = export_trial(study="sst2-study", out=world.root / "E", db_url=world.url)
    world.db.unlink()
    gone = world.root / "gone.db"
    again = reproduce(recipe_path=out / "recipe.yaml", out=world.root / "again", db_url=f"sqlite:///{gone}")
    assert _files(again) == _files(out)  # weights, card, recipe, manifest: byte for byte
    assert not gone.exists()  # no database was needed, nor created


def test_recipe_from_the_hub_rebuilds_from_its_endpoint_without_the_database(world, tmp_path):
    with serve(world.hub) as hub:
        world.register(HubSource(endpoint=hub.endpoint, backoff_s=0.01))
        out = export_trial(study="sst2-study", out=tmp_path / "E", db_url=world.url)
        recipe = Recipe.load(out / "recipe.yaml")
        assert {r.source for r in (recipe.base, recipe.target, *recipe.ingredients)} == {hub.endpoint}
        world.db.unlink()
        shutil.rmtree(hf_constants.HF_HUB_CACHE)  # nothing cached: the rebuild downloads again
        hub.reset_counters()
        again = reproduce(recipe_path=out / "recipe.yaml", out=tmp_path / "again", db_url=world.url)
        assert hub.weight_bytes[CAND] > 0
    assert _files(again) == _files(out)
    assert not world.db.exists()


def test_push_errors_are_one_line(world, tmp_path, monkeypatch):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "README.md").write_text("---\ntags: [merge]\n---\n# x\n")
    (tmp_path / "hub2").mkdir()
    with serve(tmp_path / "hub2") as hub:
        for kwargs, pattern in [
            (
                dict(token="hf_wrong"),
                r"org/m on http://127\.0\.0\.1:\d+: not pushed, the Hub refused the request \(HTTP 401\)",
            ),
            (
                dict(token=WRITE_TOKEN, repo_id="not a repo"),
                r"--push-to-hub 'not a repo': .*expected ORG/NAME",
            ),
        ]:
            with pytest.raises(SearchError, match=pattern) as info:
                push_folder(folder=folder, **{"repo_id": "org/m", **kwargs}, endpoint=hub.endpoint)
            assert "\n" not in str(info.value)
        assert not (hub.root / "org" / "m").exists()
        (folder / "README.md").write_text("---\ntags: [merge\n---\n# x\n")  # metadata the Hub rejects
        with pytest.raises(SearchError, match="not pushed, Invalid metadata in README.md") as info:
            push_folder(folder=folder, repo_id="org/m", endpoint=hub.endpoint, token=WRITE_TOKEN)
        assert "\n" not in str(info.value)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(SearchError, match="not pushed, the Hub cannot be reached") as info:
        push_folder(folder=folder, repo_id="org/m", endpoint=closed, token=WRITE_TOKEN)
    assert time.monotonic() - started < 5 and "\n" not in str(info.value)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TaskvecError, match="HF_HUB_OFFLINE is set"):
        push_folder(folder=folder, repo_id="org/m", endpoint=closed, token=WRITE_TOKEN)


def _taskvec(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100", **env},
    )


@pytest.mark.slow
def test_export_push_to_hub_end_to_end(world, tmp_path):
    """`taskvec export --push-to-hub ORG/NAME --private`: create_repo + upload_folder to the loopback Hub."""
    world.register(str(world.hub))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    (tmp_path / "remote").mkdir()
    with serve(tmp_path / "remote") as hub:
        env = {
            "HF_ENDPOINT": hub.endpoint,
            "HF_TOKEN": WRITE_TOKEN,
            "HF_HOME": str(tmp_path / "hf"),
            "TASKVEC_HOME": str(tmp_path / "home"),
        }
        refused = _taskvec("export", "--study", "sst2-study#7", "--out", busy, "--db", world.url, env=env)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.splitlines() == [
            f"error: {busy}: not empty and not a taskvec export, holds 1 entry (notes.txt); choose another "
            "--out, or pass --force to move them to busy.kept beside it (nothing is deleted)"
        ]
        assert hub.requests == []  # refused before anything was merged or sent

        out = tmp_path / "E"
        done = _taskvec(
            "export", "--study", "sst2-study#7", "--out", out, "--db", world.url,
            "--push-to-hub", "org/sst2-merged", "--private", env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        exported, pushed = done.stdout.splitlines()
        assert exported == f"exported: {out}"
        assert pushed.startswith(f"pushed: {hub.endpoint}/org/sst2-merged (commit ") and pushed.endswith(
            ", private)"
        )
        assert [(m, p) for m, p, _ in hub.requests if m == "POST"] == [
            ("POST", "/api/repos/create"),
            ("POST", "/api/validate-yaml"),
            ("POST", "/api/models/org/sst2-merged/preupload/main"),
            ("POST", "/api/models/org/sst2-merged/commit/main"),
        ]
        assert hub.private == {"org/sst2-merged"}
        local = _files(out)
        del local[MANIFEST_FILE]  # what this disk's export wrote stays here
        assert _files(hub.root / "org" / "sst2-merged") == local
        # and it comes back through the client as any Hub repo does
        back = snapshot_download("org/sst2-merged", endpoint=hub.endpoint, cache_dir=tmp_path / "dl")
        assert (Path(back) / "model.safetensors").read_bytes() == local["model.safetensors"]
        assert ModelCard.load(Path(back) / "README.md").data.base_model == [BASE, TARGET, CAND]


def test_multitask_card_names_every_task_and_the_objective():
    shas = {BASE: "b" * 40, TARGET: "t" * 40, CAND: "c" * 40}
    row = _row(
        shas,
        task="mrpc,rte",
        objective="mean",
        score_search=65.0,
        score_heldout=None,
        target_score_heldout=None,
        gain_ci=None,
        scores={"mrpc": {"search": 70.0, "heldout": 68.25}, "rte": {"search": 60.0, "heldout": None}},
        scorer={
            "mode": "rank",
            "data": "/data/glue",
            "search_size": {"mrpc": 100, "rte": 80},
            "search_from": "validation",
        },
    )
    recipe = recipe_for(row)
    card = ModelCard(model_card(recipe))
    text = card.text
    for expected in (
        "Task `mrpc,rte`",
        "Search split: mrpc 100, rte 80 examples, one stratified half of the GLUE-layout folder /data/glue validation",
        "Held-out: the other half of the GLUE-layout folder /data/glue validation",
        "| mrpc | mean(F1, accuracy) | held-out | 68.25 | - | - |",
        "| rte | accuracy | held-out | - | - | - |",
        "| objective | mean | search | 65.00 | 55.00 | +10.00 |",
    ):
        assert expected in text, expected
    (result,) = card.data.eval_results  # the one held-out score there is; a folder is not nyu-mll/glue
    assert (result.dataset_config, result.metric_type, result.dataset_type) == (
        "mrpc",
        "f1_accuracy_mean",
        "glue",
    )
    assert card.data.tags[-2:] == ["glue-mrpc", "glue-rte"] and card.data.datasets is None
