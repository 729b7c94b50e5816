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
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

# Seconds to wait for PostgreSQL to accept the lock's connection before failing.
PG_CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block.

    Args:
        path: the lock file; its folder must exist.
    """
    with Path(path).open("a") as fh:
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
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database).expanduser()
        with file_lock(database.with_name(f"{database.name}.{name}.lock")):
            yield
        return
    if backend != "postgresql":
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
