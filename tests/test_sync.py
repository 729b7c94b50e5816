"""Sync: the zoo's verdicts (local folder and loopback Hub), idempotent reruns, resuming after a kill, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from registry.db import session_scope
from registry.errors import RegistryError
from registry.models import Checkpoint
from registry.sources import HubSource
from registry.sync import list_checkpoints, show_checkpoint, sync
from tests.hub_server import serve

REPO_ROOT = Path(__file__).resolve().parent.parent
EARLY_REJECTS = ("config_mismatch", "not_t5", "tokenizer_mismatch", "tensor_mismatch")


@pytest.fixture
def own_hub(t5_hub, tmp_path):
    """A private copy of the shared tiny T5 repos (`t5_hub`) that a test may modify."""
    root = tmp_path / "hub"
    shutil.copytree(t5_hub[0], root)
    return root, t5_hub[1]


def _count(db: str) -> int:
    with session_scope(db) as session:
        return session.scalar(select(func.count()).select_from(Checkpoint))


# --- the zoo ---------------------------------------------------------------------------------------------


def _manifest(zoo: Path) -> dict:
    return json.loads((zoo / "zoo.json").read_text())


def _assert_matches_manifest(rows: list[dict], manifest: dict) -> None:
    repos = manifest["repos"]
    by_repo = {r["repo_id"]: r for r in rows}
    assert set(by_repo) == {r for r, meta in repos.items() if meta["role"] != "base"}
    compatible = {r for r, row in by_repo.items() if row["status"] == "compatible"}
    assert compatible == {
        r for r, meta in repos.items() if meta["role"] in ("target", "candidate", "multitask")
    }
    for repo_id, meta in repos.items():
        if meta["role"] != "decoy":
            continue
        row = by_repo[repo_id]
        assert row["reason_code"] == meta["reason"], (repo_id, row["reason"])
        assert row["status"] == meta["expected_status"], (repo_id, row["status"])
        assert row["reason"].startswith(f"{meta['reason']}: ")


def test_zoo_sync_from_the_folder_matches_the_manifest(tiny_zoo, tmp_path):
    manifest = _manifest(tiny_zoo)
    db = f"sqlite:///{tmp_path / 'zoo.db'}"
    summary = sync(base=manifest["base"], source=str(tiny_zoo / "hub"), db_url=db, progress=False)
    assert summary.errors == []
    _assert_matches_manifest(list_checkpoints(db_url=db), manifest)
    again = sync(base=manifest["base"], source=str(tiny_zoo / "hub"), db_url=db, progress=False)
    assert again.checked == 0 and again.skipped == summary.checked and _count(db) == summary.checked


def test_zoo_sync_through_the_loopback_hub_matches_the_manifest(tiny_zoo, tmp_path):
    manifest = _manifest(tiny_zoo)
    db = f"sqlite:///{tmp_path / 'zoo-hub.db'}"
    with serve(tiny_zoo / "hub") as hub:
        source = HubSource(endpoint=hub.endpoint, cache_dir=tmp_path / "hf", backoff_s=0.01)
        summary = sync(base=manifest["base"], source=source, db_url=db, progress=False)
        weight_bytes = dict(hub.weight_bytes)
    assert summary.errors == []
    _assert_matches_manifest(list_checkpoints(db_url=db), manifest)
    early = [r for r, m in manifest["repos"].items() if m["role"] == "decoy" and m["reason"] in EARLY_REJECTS]
    assert early
    for repo_id in early:
        assert weight_bytes.get(repo_id, 0) == 0, repo_id


# --- idempotence and resuming -----------------------------------------------------------------------------


def test_rerun_adds_no_rows_and_a_new_revision_updates_its_row(own_hub, tmp_path):
    root, expected = own_hub
    db = f"sqlite:///{tmp_path / 'i.db'}"
    first = sync(base="t/base", source=str(root), db_url=db, progress=False)
    assert first.checked == len(expected) and _count(db) == len(expected)
    before = {r["repo_id"]: r for r in list_checkpoints(db_url=db)}

    second = sync(base="t/base", source=str(root), db_url=db, progress=False)
    assert second.checked == 0 and second.skipped == len(expected) and _count(db) == len(expected)

    (root / "t/ft-a/README.md").write_text("---\nbase_model: t/base\n---\nnew revision")
    third = sync(base="t/base", source=str(root), db_url=db, progress=False)
    assert third.checked == 1 and _count(db) == len(expected)
    after = {r["repo_id"]: r for r in list_checkpoints(db_url=db)}
    assert after["t/ft-a"]["revision"] != before["t/ft-a"]["revision"]
    assert after["t/ft-a"]["id"] == before["t/ft-a"]["id"]
    assert after["t/ft-a"]["first_seen"] == before["t/ft-a"]["first_seen"]
    assert after["t/ft-b"]["revision"] == before["t/ft-b"]["revision"]


def test_interrupted_sync_keeps_finished_repos_and_resumes(own_hub, tmp_path):
    root, expected = own_hub
    db = f"sqlite:///{tmp_path / 'k.db'}"
    done = []

    def stop_after_three(report) -> None:
        done.append(report.repo_id)
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(base="t/base", source=str(root), db_url=db, progress=False, on_checked=stop_after_three)
    assert _count(db) == 3
    resumed = sync(base="t/base", source=str(root), db_url=db, progress=False)
    assert resumed.skipped == 3 and resumed.checked == len(expected) - 3 and _count(db) == len(expected)


@pytest.mark.slow
def test_sync_killed_with_sigkill_completes_on_rerun(t5_hub, tmp_path):
    root, expected = t5_hub
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    with serve(root) as hub:
        hub.delay_s = 0.05  # slow enough that the kill lands midway
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "HF_ENDPOINT": hub.endpoint,
            "HF_HOME": str(tmp_path / "hf"),
        }
        cmd = [
            sys.executable,
            "-m",
            "search.cli",
            "registry",
            "sync",
            "--base",
            "t/base",
            "--source",
            "hub",
            "--search",
            "t/",
            "--db",
            db,
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        rows = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                rows = _count(db)
            except RegistryError:
                continue
            if rows >= 2:
                break
        assert proc.poll() is None, f"sync finished before it could be killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at = _count(db)
        assert 2 <= killed_at < len(expected)

        hub.delay_s = 0.0
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _count(db) == len(expected)
    assert f"unchanged {killed_at}" in rerun.stdout


# --- CLI ---------------------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_sync_list_show(t5_hub, tmp_path):
    root, expected = t5_hub
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    result = _cli("registry", "sync", "--base", "t/base", "--source", str(root), "--db", db)
    assert result.returncode == 0, result.stderr
    assert (
        "compatible" in result.stdout
        and "incompatible: lineage_mismatch" in result.stdout
        and "unverified: pickle_only" in result.stdout
    )
    n_compatible = sum(1 for v in expected.values() if v == "compatible")
    assert any(
        line.split("│")[-2].strip() == str(n_compatible)
        for line in result.stdout.splitlines()
        if "compatible" in line and "│" in line
    )

    listed = _cli("registry", "list", "--json", "--db", db)
    rows = json.loads(listed.stdout)
    assert {r["repo_id"] for r in rows} == set(expected)
    assert all({"repo_id", "revision", "status", "reason"} <= set(r) for r in rows)

    only = json.loads(_cli("registry", "list", "--status", "compatible", "--json", "--db", db).stdout)
    assert sorted(r["repo_id"] for r in only) == sorted(r for r, v in expected.items() if v == "compatible")

    csv_out = _cli("registry", "list", "--csv", "--db", db).stdout.splitlines()
    assert csv_out[0].startswith("repo_id,revision,status,reason") and len(csv_out) == len(expected) + 1

    shown = json.loads(_cli("registry", "show", "t/stranger", "--db", db).stdout)
    assert shown[0]["reason_code"] == "lineage_mismatch" and shown[0]["card_base_model"] == ["t/base"]

    bad = _cli("registry", "list", "--status", "great", "--db", db)
    assert bad.returncode == 1 and "unknown status 'great'" in bad.stderr and "Traceback" not in bad.stderr
    missing = _cli("registry", "show", "t/nope", "--db", db)
    assert missing.returncode == 1 and "t/nope: not in the registry" in missing.stderr


def test_cli_bad_base_and_source_are_one_line_errors(t5_hub, tmp_path):
    root, _ = t5_hub
    db = f"sqlite:///{tmp_path / 'e.db'}"
    for args, message in (
        (("--base", "t/base", "--source", str(tmp_path / "nowhere")), "no such source folder"),
        (("--base", "t/missing", "--source", str(root)), "t/missing: repository not found"),
        (("--base", "../../etc", "--source", str(root)), "invalid repo id"),
        (("--base", "t/bart", "--source", str(root)), "base t/bart"),
        (("--base", "t/base", "--source", "hub"), "refusing to crawl the whole Hub"),
    ):
        result = _cli("registry", "sync", *args, "--db", db)
        assert result.returncode == 1, result.stdout
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_show_unknown_repo_raises(tmp_path):
    with pytest.raises(RegistryError, match="not in the registry"):
        show_checkpoint("o/none", db_url=f"sqlite:///{tmp_path / 'x.db'}")


def test_limit_and_search_narrow_the_sync(t5_hub, tmp_path):
    root, _ = t5_hub
    db = f"sqlite:///{tmp_path / 'l.db'}"
    assert sync(base="t/base", source=str(root), db_url=db, limit=3, progress=False).checked == 3
    narrowed = sync(base="t/base", source=str(root), db_url=db, search="ft-", progress=False)
    assert narrowed.by_status == {"compatible": 2}


def test_verify_pickles_rechecks_what_was_left_unverified(t5_hub, tmp_path):
    root, expected = t5_hub
    db = f"sqlite:///{tmp_path / 'p.db'}"
    sync(base="t/base", source=str(root), db_url=db, progress=False)
    assert show_checkpoint("t/pickle", db_url=db)[0]["status"] == "unverified"
    again = sync(base="t/base", source=str(root), db_url=db, verify_pickles=True, progress=False)
    assert again.checked == 1 and again.skipped == len(expected) - 1
    row = show_checkpoint("t/pickle", db_url=db)[0]
    assert row["status"] == "compatible" and row["weights_verified"]
