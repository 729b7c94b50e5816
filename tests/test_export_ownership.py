"""Exports own only what they wrote (issue 16 F2, F8; issue 15: modes, a non-empty --out refused).

Real pico checkpoints copied from the tiny zoo into a temporary hub, synced into a fresh registry: an
`--out` inside a registered repo, a cache or a folder the merge reads is refused before anything is
written; a re-export replaces what the earlier export wrote and refuses (or, with force, moves aside)
everything else; written files are 0644 and folders 0755.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hf_constants

from registry.db import dispose_engines
from registry.errors import ModelError
from registry.sources.local import content_sha
from registry.sync import sync
from search.export import MANIFEST_FILE, Recipe, Ref, export_merged, merge, reproduce
from search.study import records

torch.set_num_threads(1)

BASE, TARGET, CAND = "pico/t5-pico", "pico/t5-pico-sst2", "pico/t5-pico-food-sst2-a"


class World:
    def __init__(self, root: Path, zoo: Path) -> None:
        self.root, self.hub = root, root / "hub"
        for repo in (BASE, TARGET, CAND):
            shutil.copytree(zoo / "hub" / repo, self.hub / repo)
        self.url = f"sqlite:///{root / 'reg.db'}"
        sync(base=BASE, source=str(self.hub), db_url=self.url, progress=False)
        self.shas = {repo: content_sha(self.hub / repo) for repo in (BASE, TARGET, CAND)}

    def recipe(self, coefficient: float = 0.5, method: str = "task_arithmetic") -> Recipe:
        return Recipe(
            base=Ref(repo_id=BASE, revision=self.shas[BASE]),
            target=Ref(repo_id=TARGET, revision=self.shas[TARGET]),
            ingredients=({"repo_id": CAND, "revision": self.shas[CAND], "coefficient": coefficient},),
            method=method,
            method_options={"density": 0.5} if method == "ties" else {},
        )

    def merge(self, out: Path, **kwargs):
        return merge(base=BASE, target=TARGET, additions=[(CAND, 0.5)], out=out, db_url=self.url, **kwargs)

    def unchanged(self) -> bool:
        return all(content_sha(self.hub / repo) == sha for repo, sha in self.shas.items())


@pytest.fixture()
def world(tiny_zoo, tmp_path, monkeypatch):
    # caches of our own, so the checks name folders this test controls
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "home"))
    yield World(tmp_path, tiny_zoo)
    dispose_engines()


def taskvec(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TASKVEC_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *map(str, args)], capture_output=True, text=True, env=env
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_out_inside_a_registered_repo_or_a_cache_is_refused(world):
    """F2: `--out <registered repo>/merged` used to succeed and change that repo's content sha."""
    hub = world.hub
    cases = [
        (hub / TARGET / "merged", f"inside the registered repo folder of {TARGET}"),
        (hub / BASE / "sub" / "merged", f"inside the registered repo folder of {BASE}"),
        (hub / CAND, f"inside the registered repo folder of {CAND}"),
        (hub / "pico", "contains the registered repo folder"),
        (world.root / "hf" / "hub" / "merged", r"inside the Hugging Face cache \(HF_HUB_CACHE\)"),
        (world.root / "home" / "vectors" / "x", "inside the task-vector cache"),
        (world.root, "contains"),
    ]
    for out, pattern in cases:
        for write in (
            lambda out=out: world.merge(out),
            lambda out=out: export_merged(recipe=world.recipe(), out=out, db_url=world.url),
        ):
            with pytest.raises(ModelError, match=pattern) as info:
                write()
            assert "\n" not in str(info.value) and str(out.resolve()) in str(info.value)
            assert world.unchanged() and not (hub / TARGET / "merged").exists()
    # a later export still resolves every pinned repo (it used to fail with "the Hub cannot be reached")
    assert (
        export_merged(recipe=world.recipe(), out=world.root / "ok", db_url=world.url) / "recipe.yaml"
    ).is_file()


def test_merge_out_inside_a_folder_it_reads_is_refused(world, tmp_path):
    """Unregistered folders given to merge are protected too: base, target and every ingredient."""
    loose = tmp_path / "loose"
    for repo in (BASE, TARGET, CAND):
        shutil.copytree(world.hub / repo, loose / repo)
    names = {
        role: str(loose / repo) for role, repo in (("base", BASE), ("target", TARGET), ("ingredient", CAND))
    }
    for role, folder in names.items():
        with pytest.raises(ModelError, match=f"inside the {role} folder .*this merge reads from it"):
            merge(
                base=names["base"],
                target=names["target"],
                additions=[(names["ingredient"], 0.5)],
                out=Path(folder) / "merged",
            )
        assert not (Path(folder) / "merged").exists()


def test_reexport_replaces_its_own_files_and_refuses_the_users(world):
    """F8: a re-export used to delete NOTES.txt and extra/ that the user had added, without a word."""
    out = world.root / "E"
    world.merge(out)
    first = _files(out)
    (out / "NOTES.txt").write_text("mine")
    (out / "extra").mkdir()
    (out / "extra" / "a.txt").write_text("also mine")
    (out / "README.md").write_text("my edits")
    with pytest.raises(ModelError) as info:
        world.merge(out)
    message = str(info.value)
    assert "\n" not in message and "the earlier export did not write" in message and "--force" in message
    assert "3 entries (NOTES.txt, README.md (changed since the export), extra/)" in message
    assert (out / "NOTES.txt").read_text() == "mine" and (out / "extra" / "a.txt").is_file()

    notes: list[str] = []
    world.merge(out, force=True, notify=notes.append)
    kept = out.parent / "E.kept"
    assert _files(out) == first  # a clean export folder
    assert _files(kept) == {"NOTES.txt": b"mine", "extra/a.txt": b"also mine", "README.md": b"my edits"}
    assert len(notes) == 1 and str(kept) in notes[0] and "NOTES.txt" in notes[0]
    assert not list(out.parent.glob(".E.*"))  # no temporary or old folder left behind
    # a second forced move does not overwrite the first
    (out / "NOTES.txt").write_text("again")
    world.merge(out, force=True)
    assert (out.parent / "E.kept-2" / "NOTES.txt").read_text() == "again"

    # what an export wrote, it records; over an untouched earlier export it replaces exactly that and
    # keeps nothing stale (TIES writes no mergekit.yaml)
    assert {"model.safetensors", "recipe.yaml", "mergekit.yaml", MANIFEST_FILE} <= set(first)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == set(first) - {MANIFEST_FILE}
    # issue 15: an earlier export of another model is not replaced silently; the same model is rebuilt
    with pytest.raises(ModelError) as info:
        export_merged(recipe=world.recipe(method="ties"), out=out, db_url=world.url)
    assert str(info.value) == (
        f"{out}: not empty, holds an earlier export of another model; choose another --out, "
        "or pass --force to replace it"
    )
    assert _files(out) == first
    export_merged(recipe=world.recipe(method="ties"), out=out, db_url=world.url, force=True)
    assert not (out / "mergekit.yaml").exists() and not list(out.parent.glob("E.kept-3"))
    world.merge(out, force=True)
    assert _files(out) == first
    world.merge(out)  # the same model again: rebuilt in place, no --force needed
    assert _files(out) == first


def test_non_empty_out_that_is_not_an_export_is_refused(world):
    """Issue 15: a non-empty --out that no export wrote is refused without force, even with a recipe.yaml."""
    out = world.root / "work"
    out.mkdir()
    (out / "recipe.yaml").write_text(world.recipe().to_yaml())  # used to pass for an earlier export
    (out / "data.csv").write_text("1,2\n")
    for write in (
        lambda **kw: world.merge(out, **kw),
        lambda **kw: reproduce(recipe_path=out / "recipe.yaml", out=out, db_url=world.url, **kw),
    ):
        with pytest.raises(
            ModelError, match=r"not empty and not a taskvec export, holds 2 entries \(data.csv, recipe.yaml\)"
        ):
            write()
        assert sorted(p.name for p in out.iterdir()) == ["data.csv", "recipe.yaml"]
    reproduce(recipe_path=out / "recipe.yaml", out=out, db_url=world.url, force=True)
    assert (out.parent / "work.kept" / "data.csv").read_text() == "1,2\n"
    assert (out / MANIFEST_FILE).is_file()
    (world.root / "empty").mkdir()
    world.merge(world.root / "empty")  # an empty folder is fine
    with pytest.raises(ModelError, match="exists and is not a folder"):
        world.merge(out / "recipe.yaml")


def test_written_files_are_0644_and_folders_0755(world):
    out, _ = world.merge(world.root / "m")
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes
    # the manifest is hidden and deterministic: the content sha ignores it, a rebuild matches it
    again = reproduce(recipe_path=out / "recipe.yaml", out=world.root / "again", db_url=world.url)
    assert _files(again) == _files(out)


@pytest.mark.slow
def test_cli_refuses_and_force_moves_aside(world):
    """The commands: one line naming the folder and why, exit 1; --force says where the files went."""
    records.upsert_rows([_row(world)], db_url=world.url)
    dispose_engines()
    home = world.root / "home"
    inside = world.hub / TARGET / "merged"
    res = taskvec("export", "--study", "s", "--out", inside, "--db", world.url, home=home)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"inside the registered repo folder of {TARGET}" in lines[0], res.stderr
    assert not inside.exists() and world.unchanged()

    out = world.root / "E"
    out.mkdir()
    (out / "NOTES.txt").write_text("mine")
    args = [
        "merge",
        "--base",
        BASE,
        "--target",
        TARGET,
        "--add",
        f"{CAND}=0.5",
        "--db",
        world.url,
        "--out",
        out,
    ]
    res = taskvec(*args, "--force", home=home)
    assert res.returncode == 0, res.stderr
    assert f"to {out.parent / 'E.kept'}" in res.stderr and (out.parent / "E.kept" / "NOTES.txt").is_file()


def _row(world: World) -> dict:
    return {
        "task": "sst2",
        "study": "s",
        "trial_number": 0,
        "state": "complete",
        "score_search": 60.0,
        "metrics": {"search": {"accuracy": 60.0, "score": 60.0}},
        "target_score_search": 55.0,
        "target_score_heldout": 54.0,
        "target_repo": TARGET,
        "target_revision": world.shas[TARGET],
        "base_repo": BASE,
        "base_revision": world.shas[BASE],
        "ingredients": [{"repo_id": CAND, "revision": world.shas[CAND], "coefficient": 0.5}],
        "method": "task_arithmetic",
        "method_options": {},
        "scorer": {"mode": "rank", "data": "hub"},
        "split_fingerprints": {"search": "s" * 64, "heldout": "h" * 64},
        "scores": {"sst2": {"search": 60.0, "heldout": None}},
        "objective": "score",
        "constraints": {},
        "pareto": False,
        "examples_scored": 200,
        "worker": "host:1",
        "created": datetime(2026, 1, 1, tzinfo=UTC),
    }
