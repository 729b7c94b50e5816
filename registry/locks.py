"""The one cross-process lock: a file lock beside a SQLite file, an advisory lock on PostgreSQL.

Used wherever processes sharing one database must not run a step at the same time: the registry's
migrations (`registry.db`) and Optuna's schema creation (`search.study`). Each user passes its own
PostgreSQL key and lock-file name, so different steps never wait on each other.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from registry.errors import RegistryError

# Seconds to wait for PostgreSQL to accept the lock's connection before failing.
PG_CONNECT_TIMEOUT_S = 10


def sqlite_file(url: str | URL) -> Path | None:
    """The file behind a SQLite URL; None for other backends and in-memory databases.

    A URI-style URL (`sqlite:///file:x.db?mode=ro&uri=true`) names `x.db`.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") in ("true", "1") and database.startswith("file:"):
        database = database.removeprefix("file:")
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            return None
    return Path(database).expanduser()


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block.

    Args:
        path: the lock file; its folder must exist.

    Raises:
        RegistryError: if the lock file cannot be opened (a read-only or missing folder).
    """
    try:
        fh = Path(path).open("a")  # noqa: SIM115  (closed by the `with` below; the open alone is guarded)
    except OSError as exc:
        raise RegistryError(f"{path}: cannot open the lock file ({exc.strerror or exc})") from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def url_lock(url: str, *, key: int, name: str) -> Iterator[None]:
    """Hold a lock shared by every process using the database at `url`, for the block.

    Args:
        url: a SQLAlchemy URL (pass the string itself: `str(engine.url)` hides the password).
        key: the PostgreSQL advisory-lock key (any fixed 64-bit integer, one per guarded step).
        name: the lock file's tag: a SQLite file `x.db` is guarded by `x.db.<name>.lock` beside it.

    Other backends, and an in-memory SQLite database (no other process can open it), take no lock.
    """
    parsed = make_url(url)
    database = sqlite_file(parsed)
    if database is not None:
        with file_lock(database.with_name(f"{database.name}.{name}.lock")):
            yield
        return
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    # Its own connection: an advisory lock belongs to a session, whatever the caller's pool does.
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()
