"""One database for the registry and search: engine and sessions from one URL, migrated on first use.

The URL comes from the caller (`--db`), else `TASKVEC_DB`, else a SQLite file under `TASKVEC_HOME`.
SQLite runs in WAL mode with a busy timeout so several processes can share it; PostgreSQL serves
several machines. Alembic migrations (in the repo's `alembic/`, version table `taskvec_alembic_version`)
run automatically when an engine is first made, under a lock so concurrent first uses do not collide,
and in one transaction (on SQLite too: see `_make_engine`), so a kill leaves the old schema or the new one.
A database half-created by an older taskvec (tables, no version row) is rebuilt if it holds nothing, else
named with the command that repairs it (`taskvec db upgrade --repair`). Read-only commands open with
`create=False`: a missing SQLite file is an error, not a new empty database. Database errors surface as one
`RegistryError` line naming the database and the driver's reason, never the SQL.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import alembic.command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, event, inspect, select, table, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

from registry.constants import ALEMBIC_VERSION_TABLE, default_db_url
from registry.errors import RegistryError
from registry.locks import sqlite_file, url_lock

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any fixed 64-bit key: PostgreSQL advisory lock that serialises concurrent migrations (registry.locks).
_PG_MIGRATION_LOCK = 0x7461736B766563

# What a read-only command says where no database exists (it never creates one).
NO_DATABASE = "no taskvec database here (run taskvec registry sync first, or pass --db)"
# Schemes people type for the backends SQLAlchemy spells otherwise.
_SCHEME_FIXES = {"postgres": "postgresql", "pgsql": "postgresql", "psql": "postgresql", "sqlite3": "sqlite"}
_KNOWN_BACKENDS = ("sqlite", "postgresql")

_log = logging.getLogger(__name__)
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
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy understands (parse errors differ by case): show it as given
        return url
    # Without a password, as the user typed it (rendering would escape `file:` in a URI as `file%3A`).
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    """The driver's reason without SQLAlchemy's `[SQL: ...]`/`[parameters: ...]` appendix."""
    reason = str(getattr(exc, "orig", None) or exc).strip()
    return reason.splitlines()[0] if reason else type(exc).__name__


@contextlib.contextmanager
def _database_errors(url: str, *, doing: str = "") -> Iterator[None]:
    """Turn a driver failure in the block into one line naming the database (IntegrityError passes:
    callers catch it to detect a concurrent insert)."""
    try:
        yield
    except IntegrityError:
        raise
    except DatabaseError as exc:
        reason = f"{doing} ({_first_line(exc)})" if doing else _first_line(exc)
        raise RegistryError(f"{redact_url(url)}: {reason}") from exc


def missing_driver(parsed: URL) -> tuple[str, str | None] | None:
    """For a URL whose driver SQLAlchemy has no module for: `(its scheme, the backend it likely means)`
    (`postgres` -> `postgresql`; None when it is none we know); None when the driver loads.

    The one place both URLs a user types, the database's and Optuna storage's, are checked for it.
    """
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        scheme = parsed.drivername
        backend = scheme.partition("+")[0].lower()
        return scheme, _SCHEME_FIXES.get(backend, backend if backend in _KNOWN_BACKENDS else None)
    return None


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise RegistryError(f"{url!r}: not a database URL ({exc})") from exc
    missing = missing_driver(parsed)
    if missing is not None:
        scheme, fixed = missing
        backend = scheme.partition("+")[0]
        hint = (
            f"did you mean {fixed}{scheme[len(backend) :]}://?"
            if fixed
            else "use sqlite:///path/to/taskvec.db or postgresql://user@host/dbname"
        )
        raise RegistryError(f"{redact_url(url)}: unknown database driver {scheme!r} ({hint})")
    return parsed


def _resolve_url(url: str | None, *, create: bool) -> str:
    url = url or default_db_url()
    path = sqlite_file(_parse(url))
    if path is None:
        return url
    if not create:
        if not path.is_file():
            raise RegistryError(f"{path}: {NO_DATABASE}")
        return url
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"{path.parent}: cannot create the database folder ({exc.strerror})") from exc
    return url


def _make_engine(url: str, *, transactional_ddl: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    memory = sqlite_file(parsed) is None
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        poolclass=StaticPool if memory else (NullPool if transactional_ddl else None),
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:
        if transactional_ddl:
            # pysqlite's legacy mode begins no transaction before DDL, so each CREATE TABLE commits on its
            # own and a kill mid-migration leaves tables without a version row. SQLAlchemy's recipe: the
            # driver stops managing transactions and `_begin_immediate` emits BEGIN (works on 3.11+).
            dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not memory:
            _journal_mode_wal(cursor)
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if transactional_ddl:

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock from the start: check and migrate as one

    return engine


def _journal_mode_wal(cursor: sqlite3.Cursor) -> None:
    """Switch to WAL, waiting out a concurrent first use: the switch needs an exclusive lock and SQLite
    answers "database is locked" at once instead of calling the busy handler (seen with two processes
    creating one database on loaded cores)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _heads(url: str) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def _revisions(conn: Connection) -> set[str]:
    ctx = MigrationContext.configure(conn, opts={"version_table": ALEMBIC_VERSION_TABLE})
    return set(ctx.get_current_heads())


def current_revisions(engine: Engine) -> set[str]:
    """The Alembic revisions the database is at (empty for a fresh database)."""
    with engine.connect() as conn:
        return _revisions(conn)


@contextlib.contextmanager
def _migration_transaction(engine: Engine, url: str) -> Iterator[Connection]:
    """One transaction for the whole migration, version row included."""
    if sqlite_file(url) is None:  # PostgreSQL's DDL is transactional; an in-memory database dies with us
        with engine.begin() as conn:
            yield conn
        return
    ddl_engine = _make_engine(url, transactional_ddl=True)
    try:
        with ddl_engine.begin() as conn:
            yield conn
    finally:
        ddl_engine.dispose()


def _revision_schemas(url: str) -> list[tuple[str, dict[str, frozenset[str]]]]:
    """Each revision, oldest first, with the tables (and their columns) the migrations up to it create.

    Built by migrating a scratch in-memory database step by step: the migrations are the only schema truth.
    """
    script = ScriptDirectory.from_config(alembic_config(url))
    revisions = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    cfg = alembic_config("sqlite://")
    scratch = create_engine("sqlite://", poolclass=StaticPool)
    schemas = []
    try:
        with scratch.begin() as conn:
            cfg.attributes["connection"] = conn
            for revision in revisions:
                alembic.command.upgrade(cfg, revision)
                schemas.append((revision, _columns(conn, exclude=frozenset({ALEMBIC_VERSION_TABLE}))))
    finally:
        scratch.dispose()
    return schemas


def _columns(
    conn: Connection, *, only: set[str] | None = None, exclude: frozenset[str] = frozenset()
) -> dict[str, frozenset[str]]:
    insp = inspect(conn)
    names = [t for t in insp.get_table_names() if t not in exclude and (only is None or t in only)]
    out = {name: frozenset(col["name"] for col in insp.get_columns(name)) for name in names}
    # Views by name only (migration 0006 adds `leaderboard_scores`): they tell revisions with the same
    # tables apart, and a view over a dropped table has no columns to read.
    views = [v for v in insp.get_view_names() if v not in exclude and (only is None or v in only)]
    return out | {view: frozenset() for view in views}


def _clear_half_created(conn: Connection, cfg: Config, url: str, *, repair: bool) -> None:
    """A database with taskvec tables but no version row: an older taskvec killed mid-migration.

    Empty tables are dropped (nothing was ever written: the migration then starts over); tables with rows
    are stamped with the revision whose schema they match, only on `repair`, else named with the command.
    """
    if not inspect(conn).get_table_names():
        return  # a new database: the common case, kept cheap
    schemas = _revision_schemas(url)
    ours = set().union(*(tables for _, tables in schemas))
    present = _columns(conn, only=ours)
    if not present:
        return  # only other tables (Optuna's): nothing of ours to clear
    views = set(inspect(conn).get_view_names()) & set(present)  # hold no rows; may name a dropped table
    filled = sorted(
        t
        for t in present
        if t not in views and conn.execute(select(text("1")).select_from(table(t)).limit(1)).first()
    )
    names = ", ".join(sorted(set(present) - views))
    if not filled:
        for view in sorted(views):  # before the tables they read: PostgreSQL refuses to drop those first
            conn.execute(text(f'DROP VIEW "{view}"'))
        # Children first, in the database's own dependency order: a child whose parent is already gone
        # (screening_logprobs without screenings) cannot be reflected into a MetaData, but is dropped too.
        doomed = set(present) - views
        ordered = [t for t, _ in inspect(conn).get_sorted_table_and_fkc_names() if t in doomed]
        for name in reversed(ordered):
            Table(name, MetaData()).drop(conn)
        _log.warning("%s: dropped the empty tables of an interrupted migration (%s)", redact_url(url), names)
        return
    if not repair:
        raise RegistryError(
            f"{redact_url(url)}: half-created taskvec database (tables {names} exist, {', '.join(filled)} "
            f"with rows, but no schema version is recorded); repair it with "
            f"`taskvec db upgrade --repair --db {redact_url(url)}`"
        )
    match = next((rev for rev, tables in reversed(schemas) if tables == present), None)
    if match is None:
        raise RegistryError(
            f"{redact_url(url)}: cannot repair: tables {names} match no taskvec schema revision "
            "(move the file aside and run taskvec registry sync again)"
        )
    alembic.command.stamp(cfg, match)
    _log.warning("%s: repaired: tables %s recorded at schema revision %s", redact_url(url), names, match)


def _upgrade(engine: Engine, url: str, *, repair: bool = False) -> None:
    # Concurrent first uses: one process migrates, the others wait and then find the schema at head.
    with url_lock(url, key=_PG_MIGRATION_LOCK, name="migrate"), _migration_transaction(engine, url) as conn:
        current = _revisions(conn)
        if current == _heads(url):
            return  # another process migrated while we waited for the lock
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        if not current:
            _clear_half_created(conn, cfg, url, repair=repair)
        alembic.command.upgrade(cfg, "head")


def _open(url: str, *, migrate: bool = False, repair: bool = False) -> Engine:
    """The cached engine for a resolved URL, made and migrated to head on first use (`migrate`: check again)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is not None and not migrate:
            return engine
        fresh = engine is None
        try:
            with _database_errors(url, doing="cannot open the database"):
                engine = engine or _make_engine(url)
                if migrate or current_revisions(engine) != _heads(url):
                    _upgrade(engine, url, repair=repair)
        except ModuleNotFoundError as exc:
            raise RegistryError(f"{redact_url(url)}: database driver missing ({exc.name})") from exc
        except BaseException:
            if fresh and engine is not None:
                engine.dispose()
            raise
        _ENGINES[url] = engine
        return engine


def get_engine(url: str | None = None, *, create: bool = True) -> Engine:
    """The engine for `url` (else `TASKVEC_DB`, else SQLite under `TASKVEC_HOME`), migrated to head.

    Args:
        url: a SQLAlchemy URL (`sqlite:///path.db`, `postgresql://user@host/db`).
        create: make a missing SQLite file (and its folder); False for read-only commands.

    Returns:
        A process-wide cached engine.

    Raises:
        RegistryError: if the URL is malformed, names an unknown driver, or (`create=False`) a missing
            SQLite file, or if the database cannot be reached or migrated.
    """
    return _open(_resolve_url(url, create=create))


def require_database(url: str | None = None) -> None:
    """Check that the database exists (what read-only commands call first: they never create one).

    Raises:
        RegistryError: `<path>: no taskvec database here (...)` for a missing SQLite file, or as `get_engine`.
    """
    get_engine(url, create=False)


def upgrade(url: str | None = None, *, repair: bool = False) -> list[str]:
    """Migrate the database to the newest schema (what `taskvec db upgrade` runs).

    Args:
        url: database URL (see `get_engine`).
        repair: record the schema revision of a half-created database whose tables hold rows.

    Returns:
        The revisions the database is at afterwards.

    Raises:
        RegistryError: if the database cannot be reached, or is half-created and `repair` is off.
    """
    url = _resolve_url(url, create=True)
    engine = _open(url, migrate=True, repair=repair)
    with _database_errors(url, doing="cannot read the schema version"):
        return sorted(current_revisions(engine))


def dispose_engines() -> None:
    """Close every cached engine (tests, and before forking workers)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


@contextlib.contextmanager
def session_scope(url: str | None = None, *, create: bool = True) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    Args:
        url: database URL (see `get_engine`).
        create: as in `get_engine`.

    Raises:
        RegistryError: a database failure (read-only file, locked, disk full), as one line naming the
            database and the driver's reason. IntegrityError passes unchanged (callers detect races by it).
    """
    session = sessionmaker(bind=get_engine(url, create=create), expire_on_commit=False)()
    try:
        with _database_errors(url or default_db_url()):
            yield session
            session.commit()
    except BaseException:
        with contextlib.suppress(SQLAlchemyError):  # a broken connection must not hide the first error
            session.rollback()
        raise
    finally:
        session.close()
