"""F1's kill loop: SIGKILL the first command on a new SQLite database at many moments; every database
must be usable afterwards (an older taskvec left `base_models`/`checkpoints` with no version row, and
every later command failed with `table base_models already exists`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.constants import ALEMBIC_VERSION_TABLE
from registry.db import NO_DATABASE, dispose_engines
from registry.errors import RegistryError
from search.cli.app import app

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAD = "0008"
KILLS = 20
SEED = 16


def _start(db: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "search.cli", "db", "upgrade", "--db", f"sqlite:///{db}"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_file(proc: subprocess.Popen, db: Path) -> float:
    start = time.monotonic()
    while proc.poll() is None and not db.exists():
        time.sleep(0.002)
    return time.monotonic() - start


def _timings(tmp_path: Path) -> tuple[float, float]:
    """(seconds until the database file appears, seconds for the whole command) of one unkilled run."""
    db = tmp_path / "timing.db"
    start = time.monotonic()
    proc = _start(db)
    t_file = _wait_for_file(proc, db)
    assert proc.wait(timeout=120) == 0
    return t_file, time.monotonic() - start


def _state(db: Path) -> str:
    """What a kill left: no file, an empty database, a half-created one (the bug), or the full schema."""
    if not db.exists():
        return "no file"
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = (
            conn.execute(f"SELECT version_num FROM {ALEMBIC_VERSION_TABLE}").fetchall()
            if ALEMBIC_VERSION_TABLE in tables
            else []
        )
    if versions:
        return "migrated"
    return "half-created" if tables - {ALEMBIC_VERSION_TABLE} else "empty"


def _usable(db: Path) -> None:
    """The next commands work: `registry list` (refuses a missing file, creating nothing), `db upgrade`,
    `registry list` again; and SQLite's integrity check passes."""
    url = f"sqlite:///{db}"
    runner = CliRunner()
    existed = db.exists()
    listed = runner.invoke(app, ["registry", "list", "--json", "--db", url])
    if existed:
        assert listed.exit_code == 0, (db, listed.exception)
        assert json.loads(listed.stdout) == []
    else:
        assert isinstance(listed.exception, RegistryError) and NO_DATABASE in str(listed.exception)
        assert not db.exists()
    upgraded = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert upgraded.exit_code == 0, (db, upgraded.exception)
    assert f"database at revision {HEAD}" in upgraded.stdout
    again = runner.invoke(app, ["registry", "list", "--json", "--db", url])
    assert again.exit_code == 0, (db, again.exception)
    dispose_engines()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_no_kill_of_the_first_command_bricks_the_database(tmp_path):
    t_file, t_done = _timings(tmp_path)
    rng = random.Random(SEED)
    states: list[str] = []
    usable = 0
    for i in range(KILLS):
        db = tmp_path / f"k{i}.db"
        proc = _start(db)
        if i % 2:  # half inside the migration window: from the file's creation to the command's end
            _wait_for_file(proc, db)
            time.sleep(rng.uniform(0, max(t_done - t_file, 0.05)))
        else:  # half anywhere in the command's run
            time.sleep(rng.uniform(0, t_done))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        states.append(_state(db))
        _usable(db)
        usable += 1
    summary = {state: states.count(state) for state in sorted(set(states))}
    print(f"kills tried {KILLS}, left {summary}, databases usable afterwards {usable}")
    assert "half-created" not in summary
