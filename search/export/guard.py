"""Folders an export must never write into: registered repos, the Hugging Face cache, the vector cache.

Writing a merged model inside a repo the registry pinned changes that repo's content sha, so every study
and recipe pinned to it stops resolving (and later fall through to a misleading Hub lookup); inside a cache
it corrupts what other commands trust. So `--out` may be neither inside such a folder nor contain one (an
`--out` that contains it would, with `--force`, move its files aside). The folders a merge reads from
(base, target, ingredients) are protected the same way, registered or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from registry.constants import default_db_url, vector_cache_dir
from registry.db import session_scope
from registry.errors import ModelError, TaskvecError
from registry.models import BaseModel, Checkpoint


@dataclass(frozen=True)
class Protected:
    """A folder (or file) an export may not write into nor contain, and why, as the refusal says it."""

    path: Path
    what: str
    why: str


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other backends and in-memory databases."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def _is_hub(source: str) -> bool:
    # Hub rows live in the Hugging Face cache, protected as a whole below
    return source == "hub" or source.startswith(("http://", "https://"))


def registered_folders(db_url: str | None) -> list[Protected]:
    """Every local repo folder the registry knows (checkpoints of any status, and bases).

    A local source records its resolved root and keeps `repo_id` at `<root>/<repo_id>` (see
    `registry.sources.local.LocalSource`); the folder is named without hashing it, so this stays cheap
    for a large registry. A SQLite database that does not exist is not created: it knows no folders.
    """
    url = db_url or default_db_url()
    db_file = _sqlite_file(url)
    if db_file is not None and not db_file.is_file():
        return []
    rows: set[tuple[str, str]] = set()
    try:
        with session_scope(url) as session:
            for table in (Checkpoint, BaseModel):
                rows.update(tuple(r) for r in session.execute(select(table.source, table.repo_id).distinct()))
    except (TaskvecError, SQLAlchemyError):
        return []  # an unreadable registry knows nothing; commands that need it fail on their own
    why = "writing there changes the repo's content sha, so studies and recipes pinned to it break"
    return [
        Protected(
            path=Path(source).expanduser() / repo_id, what=f"the registered repo folder of {repo_id}", why=why
        )
        for source, repo_id in sorted(rows)
        if not _is_hub(source)
    ]


def protected_folders(db_url: str | None) -> list[Protected]:
    """The caches, the database file and every registered repo folder."""
    folders = [
        Protected(
            path=Path(hf_constants.HF_HUB_CACHE),
            what="the Hugging Face cache (HF_HUB_CACHE)",
            why="its snapshots are what Hub repos are pinned to",
        ),
        Protected(
            path=vector_cache_dir(),
            what="the task-vector cache",
            why="its files are loaded as task vectors",
        ),
    ]
    db_file = _sqlite_file(db_url or default_db_url())
    if db_file is not None:
        folders.append(Protected(path=db_file, what="the taskvec database", why="it holds the registry"))
    return folders + registered_folders(db_url)


def refuse_protected(out: Path, folders: Iterable[Protected]) -> None:
    """Raise if `out` is inside, or contains, one of `folders`.

    Raises:
        ModelError: one line naming `out`, the folder and why.
    """
    out = Path(out).expanduser().resolve()
    for folder in folders:
        path = folder.path.expanduser().resolve()
        if out == path or path in out.parents:
            raise ModelError(
                f"--out {out}: inside {folder.what} ({path}); {folder.why}: choose a folder outside it"
            )
        if out in path.parents:
            raise ModelError(
                f"--out {out}: contains {folder.what} ({path}); an export replaces its --out, "
                "so choose a folder that does not hold it"
            )


def reads(named: Iterable[tuple[str, Path]]) -> list[Protected]:
    """The folders a merge reads from, as protected folders (`("target", path)`, ...)."""
    return [
        Protected(path=Path(path), what=f"the {role} folder", why="this merge reads from it")
        for role, path in named
    ]
