"""Helpers for the search tests: a registry synced from a zoo's `hub/`, and the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SEARCH_SIZE = 200  # small search split: quick trials, still enough examples for three pruning rungs


def sync_zoo(zoo: Path, *, db_url: str) -> None:
    """Sync the registry from the zoo's hub with the registry's own sync (the real path)."""
    from registry.sync import sync

    sync(base=str(zoo / "hub" / "pico" / "t5-pico"), source=str(zoo / "hub"), db_url=db_url, progress=False)


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


SCREEN_GRID = (0.2, 0.5, 1.0)  # a short grid keeps the tests quick; the CLI's default grid is longer
_SCREENED: dict[Path, Path] = {}


def screened_sst2_copy(zoo: Path, *, factory, dest: Path) -> str:
    """A database synced from `zoo` with the sst2 target screened, copied to `dest` (one screening per run).

    Args:
        zoo: the tiny zoo.
        factory: pytest's `tmp_path_factory` (where the shared original lives).
        dest: folder of the copy.

    Returns:
        The copy's URL.
    """
    import shutil

    from registry.db import dispose_engines
    from search.screen.run import screen

    if zoo not in _SCREENED:
        home = factory.mktemp("sst2-screened")
        url = f"sqlite:///{home / 'taskvec.db'}"
        sync_zoo(zoo, db_url=url)
        screen(
            task="sst2",
            target="pico/t5-pico-sst2",
            db_url=url,
            data_dir=zoo / "glue",
            lambdas=SCREEN_GRID,
            search_size=SEARCH_SIZE,
            vector_cache=home / "vectors",
            progress=False,
        )
        dispose_engines()  # closing the last connection checkpoints SQLite's WAL into the file
        _SCREENED[zoo] = home / "taskvec.db"
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(_SCREENED[zoo]) + suffix)
        if src.exists():
            shutil.copy(src, Path(str(dest / "taskvec.db") + suffix))
    return f"sqlite:///{dest / 'taskvec.db'}"
