"""The one answer to "where is repo@revision on disk?", and to "which revision is this name?".

Everything that combines checkpoints works on pinned revisions (ARCHITECTURE invariant 1): a Hub repo by
its commit sha, a local folder by its content sha (`registry.sources.local.content_sha`). A name is pinned
here, and a pinned name is located here, whoever asks: screening, the study, the leaderboard's held-out
refresh and export.

Lookups that go through the registry only accept what it recorded (a `compatible` checkpoint, or a base);
`pin`/`locate` also accept a plain folder or a Hub repo the registry never saw (`taskvec merge`).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from registry.db import session_scope
from registry.errors import ModelError, RegistryError, TaskvecError
from registry.models import BaseModel, Checkpoint
from registry.sources import MODEL_FILE_PATTERNS, HubSource, open_source
from registry.sources.local import content_sha

_HEX = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Pinned:
    """A repo pinned to a revision, with the local folder holding exactly that revision.

    Attributes:
        repo_id: Hub repo id (or a local folder's path, for a folder the registry never saw).
        revision: commit sha, or a folder's content sha.
        path: the folder (`Path()` while not yet located).
        source: where the registry found it (`hub`, a Hub endpoint URL, or a folder); "" if unknown.
    """

    repo_id: str
    revision: str
    path: Path
    source: str = ""


@dataclass(frozen=True)
class Resolved:
    """A target, the base it was checked against, and the registry's id of that base."""

    target: Pinned
    base: Pinned
    base_id: int


def hub_snapshot(repo_id: str, *, revision: str | None = None) -> Path:
    """The Hub snapshot folder of `repo_id` at `revision` (downloaded when not cached).

    Raises:
        ModelError: if the repo does not exist or cannot be reached.
    """
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(MODEL_FILE_PATTERNS)))
    except RepositoryNotFoundError as exc:
        raise ModelError(f"{repo_id}: repository not found on the Hub") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"{repo_id}: not in the local cache and the Hub cannot be reached (offline?)"
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelError(f"{repo_id}: Hub download failed: {exc}") from exc


def _is_repo_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~"))


def resolve_model_dir(path_or_repo: str | Path, *, revision: str | None = None) -> Path:
    """A local folder holding the model: the path itself, or a Hub snapshot pinned to `revision`.

    Args:
        path_or_repo: a folder, or a Hub repo id (`org/name`); `HF_ENDPOINT` and `HF_TOKEN` apply.
        revision: commit sha, branch or tag for a Hub repo.

    Raises:
        ModelError: if the folder does not exist and the repo cannot be downloaded.
    """
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_repo)
    if path.exists() or not _is_repo_id(text):
        raise ModelError(f"{text}: no such model folder (and not a Hub repo id of the form org/name)")
    return hub_snapshot(text, revision=revision)


def model_dir(*, source: str, repo_id: str, revision: str) -> Path:
    """The folder of `repo_id` at `revision` from the source the registry recorded.

    Raises:
        RegistryError: if the source no longer holds that revision.
    """
    return Path(open_source(source).model_dir(repo_id, revision))


def located(pinned: Pinned) -> Pinned:
    """`pinned` with its folder resolved from its recorded source (downloads a Hub revision when needed)."""
    path = model_dir(source=pinned.source, repo_id=pinned.repo_id, revision=pinned.revision)
    return Pinned(repo_id=pinned.repo_id, revision=pinned.revision, path=path, source=pinned.source)


@dataclass(frozen=True)
class Fetched:
    """A located candidate, and the folder its fetch downloaded (what `discard_snapshot` deletes).

    Attributes:
        pinned: the candidate with its folder.
        owned: the private download folder this fetch created; None when nothing was downloaded there
            (a folder source, or a revision whose weights were in the user's Hub cache already).
        size: bytes on disk in `owned` (0 when none).
        downloaded: bytes of the snapshot's files it downloaded (`size` adds the cache's own few files).
    """

    pinned: Pinned
    owned: Path | None = None
    size: int = 0
    downloaded: int = 0


def fetch_snapshot(pinned: Pinned, *, download_dir: Path | None) -> Fetched:
    """`pinned` located, a Hub revision not cached yet downloaded into its own folder under `download_dir`.

    A revision whose weights are in the user's Hub cache is used where it is, and a folder source's repo
    in its folder: neither is ever owned (so never deleted). `download_dir` None downloads into the user's
    cache, as `located` does, and owns nothing.

    Raises:
        RegistryError: if the download fails.
    """
    source = open_source(pinned.source) if pinned.source else None
    if download_dir is None or not isinstance(source, HubSource):
        return Fetched(located(pinned))
    cached = source.cached_model_dir(pinned.repo_id, pinned.revision)
    if cached is not None:
        return Fetched(replace(pinned, path=cached))
    folder = Path(download_dir) / f"{pinned.repo_id.replace('/', '--')}--{pinned.revision[:12]}"
    private = HubSource(endpoint=source.endpoint, cache_dir=folder)
    try:
        path = private.model_dir(pinned.repo_id, pinned.revision)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a failed or interrupted download leaves nothing
        raise
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    downloaded = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())  # through the blob links
    return Fetched(replace(pinned, path=path), owned=folder, size=size, downloaded=downloaded)


def discard_snapshot(fetched: Fetched) -> int:
    """Delete the folder `fetch_snapshot` downloaded (nothing else, ever); the bytes freed."""
    if fetched.owned is None:
        return 0
    shutil.rmtree(fetched.owned, ignore_errors=True)
    return fetched.size


# --- what the registry recorded ----------------------------------------------------------------------


def _registry_source(repo_id: str, revision: str | None, db_url: str | None) -> tuple[str, str] | None:
    """(source, revision) of a repo the registry knows (a checkpoint, else a base), else None."""
    try:
        with session_scope(db_url) as session:
            for table in (Checkpoint, BaseModel):
                query = select(table.source, table.revision).where(table.repo_id == repo_id)
                if revision is not None:
                    query = query.where(table.revision == revision)
                row = session.execute(query.limit(1)).first()
                if row is not None:
                    return row[0], row[1]
    except (TaskvecError, SQLAlchemyError):
        return None
    return None


def checkpoint_dirs(
    pairs: Sequence[tuple[str, str]],
    *,
    db_url: str | None = None,
    unlocated: Collection[tuple[str, str]] = (),
) -> list[Path]:
    """Folders of (repo_id, revision) pairs that the registry holds as `compatible` checkpoints.

    Args:
        pairs: the checkpoints, in order.
        db_url: the registry's database.
        unlocated: pairs to check in the registry but not to locate (their folder is `Path()`): those whose
            vectors are cached, so that a Hub snapshot a streamed screen deleted is not downloaded again.

    Raises:
        RegistryError: if a pair is no longer a compatible registry entry, or its folder is gone.
    """
    sources = {}
    with session_scope(db_url) as session:
        for repo_id, revision in pairs:
            row = session.execute(
                select(Checkpoint.source).where(
                    Checkpoint.repo_id == repo_id,
                    Checkpoint.revision == revision,
                    Checkpoint.status == "compatible",
                )
            ).first()
            if row is None:
                raise RegistryError(
                    f"{repo_id}@{revision[:12]}: no longer a compatible registry entry "
                    "(re-sync the registry, or start a new study)"
                )
            sources[(repo_id, revision)] = row[0]
    dirs = []
    for repo_id, revision in pairs:
        if (repo_id, revision) in unlocated:
            dirs.append(Path())
            continue
        try:
            dirs.append(model_dir(source=sources[(repo_id, revision)], repo_id=repo_id, revision=revision))
        except RegistryError as exc:
            raise RegistryError(f"{repo_id}: {exc}") from exc
    return dirs


def base_dir(*, repo_id: str, revision: str, db_url: str | None = None) -> Path:
    """Folder of a base model recorded in the registry at `revision`.

    Raises:
        RegistryError: if the registry has no such base.
    """
    with session_scope(db_url) as session:
        row = session.execute(
            select(BaseModel.source).where(BaseModel.repo_id == repo_id, BaseModel.revision == revision)
        ).first()
    if row is None:
        raise RegistryError(f"{repo_id}@{revision[:12]}: base not in the registry (re-sync the registry)")
    return model_dir(source=row[0], repo_id=repo_id, revision=revision)


def _target_rows(session, target: str, revision: str | None) -> list:
    query = select(Checkpoint, BaseModel).join(BaseModel, Checkpoint.base_id == BaseModel.id)
    if revision is not None:
        query = query.where(Checkpoint.revision == revision)
    else:
        query = query.where(Checkpoint.repo_id == target)
    return session.execute(query.order_by(Checkpoint.checked_at.desc())).all()


def _base_as_target(session, target: str, folder: Path, revision: str | None) -> Resolved | None:
    """The base itself as a target (theta_T = theta_base: a multi-task model from scratch)."""
    query = select(BaseModel).order_by(BaseModel.id.desc())
    if revision is not None:
        query = query.where(BaseModel.revision == revision)
    else:
        query = query.where(BaseModel.repo_id == target)
    row = session.execute(query).scalars().first()
    if row is None:
        return None
    repo_id, rev, source, base_id = row.repo_id, row.revision, row.source, row.id
    path = folder if revision is not None else model_dir(source=source, repo_id=repo_id, revision=rev)
    pinned = Pinned(repo_id=repo_id, revision=rev, path=path, source=source)
    return Resolved(target=pinned, base=pinned, base_id=base_id)


def resolve_target(target: str, *, db_url: str | None = None) -> Resolved:
    """Find a target in the registry and check it is compatible with its base.

    Args:
        target: a repo id as synced, or a model folder (matched by content sha); a synced base is its own
            target.
        db_url: taskvec database URL.

    Raises:
        RegistryError: empty registry, target not synced or not compatible, or a pinned folder missing.
    """
    folder = Path(target).expanduser()
    revision = content_sha(folder) if folder.is_dir() else None
    with session_scope(db_url) as session:
        if session.execute(select(Checkpoint.id).limit(1)).first() is None:
            raise RegistryError(
                "the registry is empty: run `taskvec registry sync --base BASE --source SRC` first"
            )
        rows = _target_rows(session, target, revision)
        if not rows:
            as_base = _base_as_target(session, target, folder, revision)
            if as_base is not None:
                return as_base
            raise RegistryError(
                f"{target}: target not in the registry; sync it first "
                "(`taskvec registry sync --base BASE --source SRC`)"
            )
        compatible = [(c, b) for c, b in rows if c.status == "compatible"]
        if not compatible:
            ckpt, base = rows[0]
            raise RegistryError(
                f"{target}: target is {ckpt.status} with base {base.repo_id} ({ckpt.reason or 'no reason'}); "
                "a target must be compatible with the base"
            )
        ckpt, base = compatible[0]
        t = Pinned(repo_id=ckpt.repo_id, revision=ckpt.revision, path=Path(), source=ckpt.source)
        b = Pinned(repo_id=base.repo_id, revision=base.revision, path=Path(), source=base.source)
        base_id = base.id
    target_pin = Pinned(t.repo_id, t.revision, folder, t.source) if revision is not None else located(t)
    return Resolved(target=target_pin, base=located(b), base_id=base_id)


def compatible_candidates(resolved: Resolved, *, db_url: str | None = None) -> list[Pinned]:
    """Every compatible checkpoint of the target's base, except the target and the base themselves.

    Returns:
        Pinned candidates (folders not yet located) sorted by repo id, one per revision.
    """
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Checkpoint.repo_id, Checkpoint.revision, Checkpoint.source)
            .where(Checkpoint.base_id == resolved.base_id, Checkpoint.status == "compatible")
            .order_by(Checkpoint.repo_id)
        ).all()
    skip = {resolved.target.revision, resolved.base.revision}
    out, seen = [], set()
    for repo_id, revision, source in rows:
        if (
            revision in skip
            or repo_id in (resolved.target.repo_id, resolved.base.repo_id)
            or revision in seen
        ):
            continue
        seen.add(revision)
        out.append(Pinned(repo_id=repo_id, revision=revision, path=Path(), source=source))
    return out


# --- any name: a folder, a registry repo or a Hub repo -------------------------------------------------


def pin(path_or_repo: str, *, revision: str | None = None, db_url: str | None = None) -> Pinned:
    """Pin a folder (by content sha), a registry repo or a Hub repo (by commit sha), with its folder.

    A folder's `repo_id` is its absolute path; its `source` is `local`.

    Raises:
        ModelError: if the folder does not exist and the repo cannot be found.
    """
    folder = Path(path_or_repo).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        return Pinned(repo_id=str(folder), revision=content_sha(folder), path=folder, source="local")
    text = str(path_or_repo)
    if _is_repo_id(text):
        found = _registry_source(text, revision, db_url)
        if found is not None:
            source, rev = found
            return Pinned(text, rev, model_dir(source=source, repo_id=text, revision=rev), source)
    snapshot = resolve_model_dir(path_or_repo, revision=revision)
    pinned = snapshot.name if _HEX.fullmatch(snapshot.name) else (revision or snapshot.name)
    return Pinned(repo_id=text, revision=pinned, path=snapshot, source="hub")


def locate(repo_id: str, revision: str, *, db_url: str | None = None) -> Path:
    """The folder holding exactly `repo_id@revision` (a folder must still have the recorded content sha).

    Raises:
        ModelError: if a folder changed since it was pinned, or the repo cannot be found.
    """
    folder = Path(repo_id).expanduser()
    if folder.is_dir():
        sha = content_sha(folder)
        if sha != revision:
            raise ModelError(
                f"{repo_id}: folder changed since it was pinned (content sha {sha[:12]}, "
                f"recipe has {revision[:12]})"
            )
        return folder
    found = _registry_source(repo_id, revision, db_url)
    if found is not None:
        return model_dir(source=found[0], repo_id=repo_id, revision=found[1])
    return resolve_model_dir(repo_id, revision=revision)
