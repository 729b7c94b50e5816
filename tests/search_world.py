"""Helpers for the search tests: registry databases built from a zoo's `hub/`, copies of them, the CLI as a
subprocess.

The shared fixtures in `tests/conftest.py` (`synced_zoo`, `screened_sst2`, `synced_db`, `screened_db`) build
each database once per session with these helpers and hand every test (or module) a copy of its own.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.db import dispose_engines
from registry.sync import sync
from search.screen import screen

SEARCH_SIZE = 200  # small search split: quick trials, still enough examples for three pruning rungs
SCREEN_GRID = (0.2, 0.5, 1.0)  # a short grid keeps the tests quick; the CLI's default grid is longer
DB_NAME = "taskvec.db"
_SQLITE_FILES = ("", "-wal", "-shm")  # a database and its write-ahead log, should one be left
_BUILT = ".complete"  # stamp of a finished build: a build interrupted midway is redone, never reused


@dataclass(frozen=True)
class ZooHome:
    """A folder of one test (or one test module) on the tiny zoo: its own registry database and caches."""

    zoo: Path
    home: Path

    @property
    def url(self) -> str:
        """The registry database of this folder."""
        return f"sqlite:///{self.home / DB_NAME}"

    @property
    def data(self) -> Path:
        """The zoo's GLUE-layout data."""
        return self.zoo / "glue"

    @property
    def hub(self) -> Path:
        """The zoo's Hub-like folder of repos."""
        return self.zoo / "hub"

    @property
    def cache(self) -> Path:
        """A vector cache of this folder only."""
        return self.home / "vectors"

    @property
    def storage(self) -> str:
        """An Optuna storage of this folder only."""
        return f"sqlite:///{self.home / 'optuna.db'}"


def sync_zoo(zoo: Path, *, db_url: str) -> None:
    """Sync the registry from the zoo's hub with the registry's own sync (the real path)."""
    sync(base=str(zoo / "hub" / "pico" / "t5-pico"), source=str(zoo / "hub"), db_url=db_url, progress=False)


def screen_sst2(zoo: Path, *, db_url: str, vector_cache: Path) -> None:
    """Screen the sst2 target's candidates over `SCREEN_GRID` into `db_url` (already synced)."""
    screen(
        task="sst2",
        target="pico/t5-pico-sst2",
        db_url=db_url,
        data_dir=zoo / "glue",
        lambdas=SCREEN_GRID,
        search_size=SEARCH_SIZE,
        vector_cache=vector_cache,
        progress=False,
    )


def compatible_non_base(zoo: Path) -> set[str]:
    """Repo ids the manifest expects compatible, except the base itself."""
    manifest = json.loads((zoo / "zoo.json").read_text())
    return {
        repo
        for repo, entry in manifest["repos"].items()
        if entry.get("expected_status") == "compatible" and entry.get("role") != "base"
    }


def taskvec(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `taskvec ARGS` in a subprocess (TASKVEC_HOME under the test's folder)."""
    env = {**os.environ, "TASKVEC_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def copy_database(src: Path, dest: Path) -> str:
    """Copy the SQLite database `src` (with its WAL, should one be left) to `dest/taskvec.db`; its URL."""
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in _SQLITE_FILES:
        path = Path(f"{src}{suffix}")
        if path.exists():
            shutil.copy(path, Path(f"{dest / DB_NAME}{suffix}"))
    return f"sqlite:///{dest / DB_NAME}"


def synced_original(zoo: Path, *, root: Path) -> Path:
    """The database synced from `zoo`, built once under `root` (reused while its stamp is there)."""
    home = root / f"synced-{_key(zoo)}"
    if not (home / _BUILT).exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        sync_zoo(zoo, db_url=f"sqlite:///{home / DB_NAME}")
        dispose_engines()  # closing the last connection checkpoints SQLite's WAL into the file
        (home / _BUILT).touch()
    return home / DB_NAME


def screened_original(zoo: Path, *, root: Path) -> Path:
    """A copy of `synced_original` with the sst2 target screened, built once under `root`."""
    home = root / f"sst2-screened-{_key(zoo)}"
    if not (home / _BUILT).exists():
        shutil.rmtree(home, ignore_errors=True)
        url = copy_database(synced_original(zoo, root=root), home)
        screen_sst2(zoo, db_url=url, vector_cache=home / "vectors")
        dispose_engines()
        (home / _BUILT).touch()
    return home / DB_NAME


def screened_sst2_copy(zoo: Path, *, factory: pytest.TempPathFactory, dest: Path) -> str:
    """A database synced from `zoo` with the sst2 target screened, copied to `dest`; the copy's URL.

    The `screened_sst2` fixture is the same copy for tests that take fixtures; both share one screening
    per session, built under the session's base temp folder.
    """
    return copy_database(screened_original(zoo, root=factory.getbasetemp()), dest)


def _key(zoo: Path) -> str:
    """A short name per zoo, so that two zoos in one session never share a database."""
    return hashlib.sha1(str(zoo.resolve()).encode()).hexdigest()[:8]


def leaderboard_row(
    study: str, number: int, score: float, *, task: str = "rte", target: float = 60.0
) -> dict:
    """A complete leaderboard row as the study writes it (synthetic ids and fingerprints)."""
    return {
        "task": task,
        "study": study,
        "trial_number": number,
        "state": "complete",
        "score_search": score,
        "metrics": {"search": {"accuracy": score, "score": score}},
        "target_score_search": target,
        "target_score_heldout": target - 1,
        "target_repo": f"pico/t5-pico-{task}",
        "target_revision": "a" * 40,
        "base_repo": "pico/t5-pico",
        "base_revision": "b" * 40,
        "ingredients": [{"repo_id": "pico/cand-1", "revision": "c" * 40, "coefficient": 0.5 + number / 10}],
        "method": "task_arithmetic",
        "method_options": {},
        "scorer": {"mode": "rank", "data": "hub"},
        "split_fingerprints": {"search": "s" * 64, "heldout": "h" * 64},
        "scores": {task: {"search": score, "heldout": None}},
        "objective": "score",
        "constraints": {},
        "pareto": False,
        "examples_scored": 200,
        "worker": "host:1",
        "created": datetime(2026, 1, 1, tzinfo=UTC),
    }


def recorded_calls(monkeypatch, module, name: str) -> list:
    """Replace `module.name` by a recorder of its calls (the command imports it when it runs); the
    recorder keeps the original's signature, where the CLI reads its defaults."""
    calls: list = []

    @functools.wraps(getattr(module, name))
    def record(*args, **kwargs):
        calls.append((args, kwargs))
        raise SystemExit(0)

    monkeypatch.setattr(module, name, record)
    return calls
