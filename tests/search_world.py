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
