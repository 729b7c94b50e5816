"""The test suite stops every server it started (issue 16, item 6): a pytest session run in a subprocess on
a private PostgreSQL directory, with the shared `postgres_url` fixture (tests/conftest.py).

- nothing running: the session starts a server and stops it when it ends, whether its test passed, failed
  or was interrupted (Ctrl-C);
- a server already up (someone else's, e.g. `.ci/run`'s): the session uses it and leaves it running.

Skips where PostgreSQL is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "postgres"
INNER_TEST = """
import os
import signal
from pathlib import Path

from sqlalchemy import create_engine, text


def test_uses_postgres(postgres_url):
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    data = Path(os.environ["TASKVEC_PG_DIR"]) / "data"
    Path(os.environ["PID_OUT"]).write_text((data / "postmaster.pid").read_text().split()[0])
    outcome = os.environ["OUTCOME"]
    if outcome == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
    assert outcome == "pass"
"""


def _installed() -> bool:
    return any((d / "initdb").is_file() for d in Path("/usr/lib/postgresql").glob("*/bin"))


def _alive(pid: int) -> bool:
    """A running process (not a zombie left to a container's init that does not reap)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.fixture(scope="module")
def pg_dir() -> Iterator[Path]:
    """A private `.ci/postgres` directory under /tmp (as root the script runs the server as `postgres`, which
    cannot enter pytest's own temp folders), its server stopped and the directory removed afterwards. One
    per module: its cluster is initialised once, each test starts from a stopped server."""
    if not SCRIPT.is_file() or not _installed():
        pytest.skip("PostgreSQL is not installed (`.ci/postgres start` as root installs it)")
    folder = Path(tempfile.mkdtemp(prefix="taskvec-suite-pg-"))
    try:
        yield folder
    finally:
        _script("stop", pg_dir=folder)
        shutil.rmtree(folder, ignore_errors=True)


def _script(command: str, *, pg_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TASKVEC_PG_DIR": str(pg_dir), "TASKVEC_PG_NO_INSTALL": "1"}
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=120)


def _session(outcome: str, *, pg_dir: Path, folder: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Run the inner test in its own pytest session with this suite's fixtures; (result, server pid)."""
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_inner.py").write_text(INNER_TEST)
    env = {
        **os.environ,
        "TASKVEC_PG_DIR": str(pg_dir),
        "PID_OUT": str(folder / "pid"),
        "OUTCOME": outcome,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("TASKVEC_TEST_PG_URL", None)  # as `make test` runs: no server handed in
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "tests.conftest",
        "test_inner.py",
    ]
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert (folder / "pid").is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, int((folder / "pid").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("outcome", "returncode"), [("fail", 1), ("interrupt", 2)])
def test_a_server_the_session_started_is_stopped_when_it_ends(outcome, returncode, pg_dir, tmp_path):
    assert _script("url", pg_dir=pg_dir).returncode != 0  # nothing runs there yet
    done, pid = _session(outcome, pg_dir=pg_dir, folder=tmp_path / "inner")
    assert done.returncode == returncode, done.stdout[-3000:]
    assert not _alive(pid), f"the session left PostgreSQL (pid {pid}) running"
    assert _script("url", pg_dir=pg_dir).returncode != 0


@pytest.mark.slow
def test_a_server_already_up_is_left_running(pg_dir, tmp_path):
    started = _script("start", pg_dir=pg_dir)
    assert started.returncode == 0, started.stderr
    done, pid = _session("pass", pg_dir=pg_dir, folder=tmp_path / "inner")
    assert done.returncode == 0, done.stdout[-3000:]
    assert _alive(pid) and _script("url", pg_dir=pg_dir).returncode == 0  # not the session's to stop
