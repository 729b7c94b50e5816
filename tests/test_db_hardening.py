"""The database under faults: an interrupted first migration, half-created databases from older versions,
read-only files, missing files for read-only commands, unknown drivers, and user text printed literally.

The kill loop (SIGKILL of a real first command at many moments) is in test_db_kill.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import alembic.command
import pytest
from sqlalchemy import Engine, create_engine, event, inspect, select, text
from typer.testing import CliRunner

from registry.constants import ALEMBIC_VERSION_TABLE
from registry.db import (
    NO_DATABASE,
    alembic_config,
    current_revisions,
    dispose_engines,
    get_engine,
    session_scope,
    upgrade,
)
from registry.errors import RegistryError
from registry.models import BaseModel, Checkpoint
from search.cli.app import app

REPO_ROOT = Path(__file__).resolve().parent.parent
HEAD = "0008"
TABLES = {"base_models", "checkpoints", "screenings", "leaderboard"}


@pytest.fixture(autouse=True)
def _fresh_engines():
    dispose_engines()
    yield
    dispose_engines()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _raw(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _invoke(*args: str):
    """The root app in-process; a known failure comes back as `result.exception` (main() prints it)."""
    return CliRunner().invoke(app, list(args))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- F1: the first migration is one transaction ---------------------------------------------------------


def test_an_interrupted_first_migration_leaves_no_table(tmp_path):
    """pysqlite committed each CREATE TABLE on its own: a failure after the first tables left them behind
    with no version row, and every later command failed with `table base_models already exists`."""
    path = tmp_path / "x.db"

    def _die_midway(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE SCREENINGS"):
            raise KeyboardInterrupt  # what a kill looks like from inside: nothing after this runs

    event.listen(Engine, "before_cursor_execute", _die_midway)
    try:
        with pytest.raises(KeyboardInterrupt):
            get_engine(f"sqlite:///{path}")
    finally:
        event.remove(Engine, "before_cursor_execute", _die_midway)
    assert not (_tables(path) & TABLES)  # rolled back: base_models and checkpoints too
    dispose_engines()
    assert upgrade(f"sqlite:///{path}") == [HEAD]
    assert _tables(path) >= TABLES


@pytest.mark.parametrize("version_table", ["empty", "missing"])
def test_a_half_created_database_from_an_older_version_is_rebuilt(tmp_path, version_table):
    """The F1 state an older taskvec left: base_models and checkpoints, no version row, nothing written."""
    path = tmp_path / "old.db"
    get_engine(f"sqlite:///{path}")
    dispose_engines()
    tail = (
        f"DELETE FROM {ALEMBIC_VERSION_TABLE}"
        if version_table == "empty"
        else f"DROP TABLE {ALEMBIC_VERSION_TABLE}"
    )
    _raw(path, "DROP TABLE leaderboard", "DROP TABLE screenings", tail)
    listed = _invoke("registry", "list", "--json", "--db", f"sqlite:///{path}")
    assert listed.exit_code == 0, listed.exception
    assert json.loads(listed.stdout) == []
    assert current_revisions(get_engine(f"sqlite:///{path}")) == {HEAD}
    assert _tables(path) >= TABLES


@pytest.mark.parametrize("revision", ["0002", HEAD])
def test_a_half_created_database_with_rows_is_named_then_repaired(tmp_path, revision):
    path = tmp_path / "rows.db"
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    with engine.begin() as conn:  # an older schema, as an older taskvec built it
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, revision)
    engine.dispose()
    with session_scope(url) as session:
        session.add(BaseModel(repo_id="o/base", revision="a" * 40, source="hub"))
    dispose_engines()
    _raw(path, f"DELETE FROM {ALEMBIC_VERSION_TABLE}")

    with pytest.raises(RegistryError) as refused:
        get_engine(url)
    message = str(refused.value)
    assert message.startswith(f"{url}: half-created taskvec database")
    assert f"`taskvec db upgrade --repair --db {url}`" in message and "\n" not in message

    repaired = _invoke("db", "upgrade", "--repair", "--db", url)
    assert repaired.exit_code == 0, repaired.exception
    assert f"database at revision {HEAD}" in repaired.stdout
    with session_scope(url) as session:
        assert [b.repo_id for b in session.scalars(select(BaseModel))] == ["o/base"]
    columns = {c["name"] for c in inspect(get_engine(url)).get_columns("leaderboard")}
    assert "feasible" in columns  # 0002 -> 0003 ran after the stamp


# --- F6: database errors are one line naming the database ----------------------------------------------


def test_a_write_to_a_read_only_database_is_one_line(tmp_path):
    path = tmp_path / "ro.db"
    get_engine(f"sqlite:///{path}")
    dispose_engines()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"  # chmod alone does not stop root
    with pytest.raises(RegistryError) as caught, session_scope(read_only) as session:
        session.add(BaseModel(repo_id="o/base", revision="a" * 40, source="hub"))
    assert str(caught.value) == f"{read_only}: attempt to write a readonly database"
    listed = _invoke("registry", "list", "--db", read_only)  # reading still works
    assert listed.exit_code == 0, listed.exception


@pytest.mark.slow  # imports torch and reads the zoo's base
def test_registry_sync_into_a_read_only_database_names_it(tiny_zoo, tmp_path):
    path = tmp_path / "ro.db"
    get_engine(f"sqlite:///{path}")
    dispose_engines()
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    base = json.loads((tiny_zoo / "zoo.json").read_text())["base"]
    result = _invoke(
        "registry", "sync", "--base", base, "--source", str(tiny_zoo / "hub"), "--limit", "1",
        "--db", read_only,
    )  # fmt: skip
    assert isinstance(result.exception, RegistryError), result.exception
    message = str(result.exception)
    assert message == f"{read_only}: attempt to write a readonly database"


# --- read-only commands never create a database or its folder ------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["registry", "list"],
        ["registry", "show", "o/name"],
        ["leaderboard"],
        ["helpful", "--task", "sst2"],
        ["report", "--study", "s", "--out", "REPORT"],
    ],
    ids=lambda c: "-".join(c[:2]),
)
def test_read_only_commands_create_nothing(tmp_path, command):
    missing = tmp_path / "missing" / "dir" / "x.db"
    args = [str(tmp_path / "rep") if a == "REPORT" else a for a in command]
    result = _invoke(*args, "--db", f"sqlite:///{missing}")
    assert isinstance(result.exception, RegistryError), result.exception
    assert str(result.exception) == f"{missing}: {NO_DATABASE}"
    assert not (tmp_path / "missing").exists() and not (tmp_path / "rep").exists()


def test_a_read_only_command_on_a_missing_database_prints_one_line(tmp_path):
    missing = tmp_path / "missing" / "dir" / "x.db"
    result = _cli("registry", "list", "--db", f"sqlite:///{missing}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {missing}: {NO_DATABASE}"
    assert not (tmp_path / "missing").exists()


def test_writers_still_create_their_database(tmp_path):
    path = tmp_path / "new" / "folder" / "x.db"
    assert upgrade(f"sqlite:///{path}") == [HEAD]
    assert path.is_file()


# --- unknown drivers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgres://u@h/d",
            "postgres://u@h/d: unknown database driver 'postgres' (did you mean postgresql://?)",
        ),
        (
            "mysqlx://u:secret@h/d",
            "mysqlx://u:***@h/d: unknown database driver 'mysqlx' "
            "(use sqlite:///path/to/taskvec.db or postgresql://user@host/dbname)",
        ),
        ("sqlite3:///x.db", "sqlite3:///x.db: unknown database driver 'sqlite3' (did you mean sqlite://?)"),
    ],
)
def test_an_unknown_driver_suggests_the_scheme(url, expected):
    with pytest.raises(RegistryError) as caught:
        get_engine(url)
    assert str(caught.value) == expected


# --- F7: user text is printed literally ----------------------------------------------------------------


def test_registry_cli_prints_markup_in_user_text_literally(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with session_scope(url) as session:
        base = BaseModel(repo_id="o/base", revision="a" * 40, source="hub")
        session.add(base)
        session.flush()
        session.add(
            Checkpoint(
                base_id=base.id, repo_id="[red]o/n", revision="b" * 40, source="hub",
                status="broken", reason="[b]r :x:", weights_verified=False,
            )
        )  # fmt: skip
    listed = _invoke("registry", "list", "--db", url)
    assert listed.exit_code == 0, listed.exception
    assert "[red]o/n" in listed.stdout and "[b]r :x:" in listed.stdout


def test_registry_show_error_keeps_markup_like_text(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    result = _cli("registry", "show", "[red]org/name", "--db", url, cwd=tmp_path)
    assert result.returncode == 1
    assert "[red]org/name: not in the registry" in result.stderr


def test_a_half_created_postgres_database_is_rebuilt(postgres_db):
    engine = create_engine(postgres_db)
    with engine.begin() as conn:  # what a non-transactional builder could leave: tables, no version row
        cfg = alembic_config(postgres_db)
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0001")
        conn.execute(text(f"DELETE FROM {ALEMBIC_VERSION_TABLE}"))
    engine.dispose()
    assert upgrade(postgres_db) == [HEAD]
    assert set(inspect(get_engine(postgres_db)).get_table_names()) >= TABLES
