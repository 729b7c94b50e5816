"""The registry database: auto-migration, own version table, WAL, concurrent first use, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

import search.tables  # noqa: F401  (search's tables join the metadata compared below)
from registry.constants import ALEMBIC_VERSION_TABLE
from registry.db import Base, current_revisions, get_engine, session_scope, upgrade
from registry.errors import RegistryError
from registry.models import BaseModel, Checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_fresh_database_is_migrated_to_head_with_our_version_table(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    tables = set(inspect(engine).get_table_names())
    assert {"base_models", "checkpoints", ALEMBIC_VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # Optuna's table name stays free
    assert current_revisions(engine) and current_revisions(engine) == set(upgrade(str(engine.url)))
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_migrations_build_exactly_the_orm_schema(tmp_path):
    """Alembic's autogenerate finds nothing to add: every ORM column, table and index has its migration."""
    engine = get_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    ours = [d for d in diffs if not (d[0] == "remove_table" and d[1].name == ALEMBIC_VERSION_TABLE)]
    assert ours == []


def test_session_scope_commits_and_rolls_back(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    with session_scope(url) as session:
        session.add(BaseModel(repo_id="o/base", revision="a" * 40, source="hub"))
    with pytest.raises(RuntimeError), session_scope(url) as session:
        base = session.scalars(select(BaseModel)).one()
        session.add(
            Checkpoint(base_id=base.id, repo_id="o/x", revision="b" * 40, source="hub", status="compatible")
        )
        session.flush()
        raise RuntimeError("boom")
    with session_scope(url) as session:
        assert session.scalars(select(Checkpoint)).all() == []
        assert len(session.scalars(select(BaseModel)).all()) == 1


def test_optuna_storage_shares_the_database(tmp_path):
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=url, study_name="s")
    engine = get_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert {"alembic_version", ALEMBIC_VERSION_TABLE, "checkpoints", "studies"} <= tables


def test_bad_url_is_a_one_line_error():
    with pytest.raises(RegistryError, match="not a database URL"):
        get_engine("definitely not a url")


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_upgrade_command_from_another_directory(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = _cli("db", "upgrade", "--db", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout
    assert current_revisions(get_engine(url))


def test_db_url_from_environment(tmp_path):
    result = _cli("db", "upgrade", cwd=tmp_path, env={"TASKVEC_DB": f"sqlite:///{tmp_path / 'env.db'}"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env.db").exists()


def test_concurrent_first_use_by_two_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = (
        "import sys; from registry.db import get_engine, session_scope; from registry.models import BaseModel\n"
        "get_engine(sys.argv[1])\n"
        "with session_scope(sys.argv[1]) as s: s.add(BaseModel(repo_id='o/'+sys.argv[2], revision='r', source='x'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(i)], env=env, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    engine = get_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {ALEMBIC_VERSION_TABLE}")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM base_models")).scalar() == 2


def test_postgres_concurrent_first_use_migrates_once(postgres_db):
    code = "import sys; from registry.db import get_engine, current_revisions; print(sorted(current_revisions(get_engine(sys.argv[1]))))"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_db],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert outputs[0][0] == outputs[1][0]
    engine = get_engine(postgres_db)
    tables = set(inspect(engine).get_table_names())
    assert {"base_models", "checkpoints", ALEMBIC_VERSION_TABLE} <= tables
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {ALEMBIC_VERSION_TABLE}")).scalar() == 1
