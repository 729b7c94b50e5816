"""Shared fixtures: the tiny zoo, registry databases built from it, tiny synthetic T5 repos, PostgreSQL.

- `tiny_zoo`: the pico zoo at tiny scale, built once per session. Set `TASKVEC_TEST_ZOO=/some/dir` to build
  it there once and reuse it across runs (the build is cached by a `.complete` stamp).
- Registry databases on the tiny zoo, each built once per session and handed out as copies, so a test
  that writes never changes what another test reads: `synced_zoo(dest)` / `screened_sst2(dest)` copy the
  synced database (or the one with the sst2 target screened) into `dest` and return a `ZooHome`;
  `synced_db` / `screened_db` are such a copy in a folder of the test module (its tests share it, in order).
- `t5_hub`: a small Hub-like folder of tiny T5 repos (a base, fine-tunes, one decoy per reason), read-only.
- `postgres_url` / `postgres_db`: a PostgreSQL server (the suite stops it at the end if it started it) and a
  fresh database on it per test.

This file is imported by every test run, model-free ones included (`tests/test_layout.py`), so the zoo
builder and the search stages (torch, transformers: ~10 s to import on a 2-core box) are imported inside
the fixtures that need them, not here.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from registry.db import dispose_engines

if TYPE_CHECKING:
    from tests.search_world import ZooHome

ENV_TEST_ZOO = "TASKVEC_TEST_ZOO"
PG_ENV = "TASKVEC_TEST_PG_URL"
PG_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres"
_PG_STARTED = pytest.StashKey[bool]()  # set while a server this session started may be running


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a built tiny pico zoo (`zoo.json`, `glue/`, `aux/`, `hub/pico/...`)."""
    from benchmarks.zoo import build  # heavy (torch, transformers): see the module's docstring

    cached = os.environ.get(ENV_TEST_ZOO)
    out = Path(cached) if cached else tmp_path_factory.mktemp("zoo") / "tiny"
    return build(out=out, seed=0, scale="tiny", progress=False)


# --- registry databases on the tiny zoo -------------------------------------------------------------------


@pytest.fixture(scope="session")
def synced_zoo(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], ZooHome]:
    """`synced_zoo(dest)`: a `ZooHome` in `dest` holding a copy of the registry synced from the tiny zoo."""
    from tests import search_world as sw  # imports the search stages: see the module's docstring

    return _copies(sw.synced_original(tiny_zoo, root=tmp_path_factory.getbasetemp()), zoo=tiny_zoo)


@pytest.fixture(scope="session")
def screened_sst2(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], ZooHome]:
    """`screened_sst2(dest)`: like `synced_zoo`, with the sst2 target's candidates screened (once a session)."""
    from tests import search_world as sw  # imports the search stages: see the module's docstring

    return _copies(sw.screened_original(tiny_zoo, root=tmp_path_factory.getbasetemp()), zoo=tiny_zoo)


def _copies(original: Path, *, zoo: Path) -> Callable[[Path], ZooHome]:
    """A function copying the database `original` into a folder, as a `ZooHome` there."""
    from tests.search_world import ZooHome, copy_database  # loaded already by the fixture calling this

    def copy(dest: Path) -> ZooHome:
        copy_database(original, dest)
        return ZooHome(zoo=zoo, home=dest)

    return copy


@pytest.fixture(scope="module")
def synced_db(synced_zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooHome]:
    """A synced registry in a folder of this test module: its tests share (and may write) it."""
    yield synced_zoo(tmp_path_factory.mktemp("synced"))
    dispose_engines()


@pytest.fixture(scope="module")
def screened_db(screened_sst2, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooHome]:
    """A registry with sst2 screened, in a folder of this test module: its tests share (and may write) it."""
    yield screened_sst2(tmp_path_factory.mktemp("screened"))
    dispose_engines()


# --- tiny synthetic T5 repos ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def t5_hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(root, expected): a Hub-like folder of tiny T5 repos (`tests.t5_repos.make_world`) and each repo's
    expected reason code ("compatible" for the fine-tunes). Read-only: a test that changes it copies it."""
    import torch  # heavy: see the module's docstring

    from tests.t5_repos import make_world

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("t5hub") / "hub"
    return root, make_world(root)


# --- PostgreSQL -------------------------------------------------------------------------------------------


def _ci_postgres(command: str, *, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PG_SCRIPT), command],
        env={**os.environ, "TASKVEC_PG_NO_INSTALL": "1"},  # start an installed server, never install one
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _stop_postgres(config: pytest.Config) -> None:
    """Stop the server this session started, if it did (idempotent)."""
    if config.stash.get(_PG_STARTED, False):
        config.stash[_PG_STARTED] = False
        _ci_postgres("stop", timeout=120)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Backstop: a session ended by Ctrl-C or an internal error may skip fixture teardown; this still runs."""
    _stop_postgres(config)


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a PostgreSQL server: `TASKVEC_TEST_PG_URL` (whoever set it runs and stops the server), else
    the `.ci/postgres` server if it is up (left running), else one started here and stopped when the
    session ends, passed or failed. Skips, saying why, when none can be had."""
    url = os.environ.get(PG_ENV)
    if url:
        yield url
        return
    if not PG_SCRIPT.is_file():
        pytest.skip(f"no PostgreSQL: {PG_ENV} is not set and {PG_SCRIPT} is missing")
    running = _ci_postgres("url", timeout=30)
    if running.returncode == 0 and running.stdout.strip():
        yield running.stdout.strip()  # someone else's server: theirs to stop
        return
    request.config.stash[_PG_STARTED] = True  # before `start`: a server left half-started is stopped too
    try:
        done = _ci_postgres("start", timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _stop_postgres(request.config)
        pytest.skip(f"no PostgreSQL: {PG_ENV} is not set and `.ci/postgres start` failed ({exc})")
    url = next(
        (
            line.split("=", 1)[1].strip()
            for line in done.stdout.splitlines()
            if line.startswith(f"export {PG_ENV}=")
        ),
        None,
    )
    if done.returncode != 0 or not url:
        _stop_postgres(request.config)
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(
            f"no PostgreSQL: {PG_ENV} is not set and `.ci/postgres start` could not start it ({reason});"
            " run `.ci/postgres start` as root to install one"
        )
    try:
        yield url
    finally:
        _stop_postgres(request.config)


@pytest.fixture()
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, uniquely named database on `postgres_url`, dropped after the test (reruns start clean)."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"taskvec_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server went away, or the role cannot create databases
        admin.dispose()
        pytest.skip(
            f"PostgreSQL at {make_url(postgres_url).render_as_string()} refused a test database: {exc}"
        )
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
