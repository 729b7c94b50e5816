"""One database for the registry and search: engine and sessions from one URL, migrated on first use.

The URL comes from the caller (`--db`), else `TASKVEC_DB`, else a SQLite file under `TASKVEC_HOME`.
SQLite runs in WAL mode with a busy timeout so several processes can share it; PostgreSQL serves
several machines. Alembic migrations (in the repo's `alembic/`, version table `taskvec_alembic_version`)
run automatically when an engine is first made, under a lock so concurrent first uses do not collide.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import alembic.command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import StaticPool

from registry.constants import ALEMBIC_VERSION_TABLE, default_db_url
from registry.errors import RegistryError
from registry.locks import url_lock

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any fixed 64-bit key: PostgreSQL advisory lock that serialises concurrent migrations (registry.locks).
_PG_MIGRATION_LOCK = 0x7461736B766563

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


class Base(DeclarativeBase):
    """Declarative base shared by registry's and search's tables (one metadata, one migration history)."""


def alembic_dir() -> Path:
    """The `alembic/` folder next to the `registry` package (works from a checkout or an editable install).

    Raises:
        RegistryError: if the migrations are not there.
    """
    folder = Path(__file__).resolve().parent.parent / "alembic"
    if not (folder / "env.py").is_file():
        raise RegistryError(f"{folder}: Alembic migrations not found (install taskvec from a checkout, -e)")
    return folder


def alembic_config(url: str) -> Config:
    """An Alembic `Config` for `url`, built in code so no alembic.ini or cwd is needed."""
    cfg = Config()
    cfg.set_main_option("script_location", str(alembic_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("version_table", ALEMBIC_VERSION_TABLE)
    return cfg


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (for messages and summaries)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands (parse errors differ by case): show it as given
        return url


def _resolve_url(url: str | None) -> str:
    url = url or default_db_url()
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise RegistryError(f"{url!r}: not a database URL ({exc})") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True)
    memory = parsed.database in (None, "", ":memory:")
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        poolclass=StaticPool if memory else None,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _heads(url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    """The Alembic revisions the database is at (empty for a fresh database)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": ALEMBIC_VERSION_TABLE})
        return set(ctx.get_current_heads())


def _upgrade(engine: Engine, url: str) -> None:
    # Concurrent first uses: one process migrates, the others wait and then find the schema at head.
    with url_lock(url, key=_PG_MIGRATION_LOCK, name="migrate"):
        if current_revisions(engine) == _heads(url):
            return  # another process migrated while we waited for the lock
        cfg = alembic_config(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            alembic.command.upgrade(cfg, "head")


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (else `TASKVEC_DB`, else SQLite under `TASKVEC_HOME`), migrated to head.

    Args:
        url: a SQLAlchemy URL (`sqlite:///path.db`, `postgresql://user@host/db`).

    Returns:
        A process-wide cached engine.

    Raises:
        RegistryError: if the URL is malformed or the database cannot be reached or migrated.
    """
    url = _resolve_url(url)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is not None:
            return engine
        try:
            engine = _make_engine(url)
            if current_revisions(engine) != _heads(url):
                _upgrade(engine, url)
        except OperationalError as exc:
            raise RegistryError(f"{redact_url(url)}: cannot open the database ({exc.orig})") from exc
        except ModuleNotFoundError as exc:
            raise RegistryError(f"{url}: database driver missing ({exc.name})") from exc
        _ENGINES[url] = engine
        return engine


def upgrade(url: str | None = None) -> list[str]:
    """Migrate the database to the newest schema (what `taskvec db upgrade` runs).

    Returns:
        The revisions the database is at afterwards.

    Raises:
        RegistryError: if the database cannot be reached.
    """
    url = _resolve_url(url)
    engine = _ENGINES.get(url)
    if engine is None:
        engine = get_engine(url)  # migrates
    else:
        _upgrade(engine, url)
    return sorted(current_revisions(engine))


def dispose_engines() -> None:
    """Close every cached engine (tests, and before forking workers)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


@contextlib.contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    Args:
        url: database URL (see `get_engine`).
    """
    session = sessionmaker(bind=get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
