"""From names to pinned folders: the target, its base and the candidates, as the registry knows them.

Screening and search only combine checkpoints the registry marked `compatible` with one base, each pinned
to the revision that was checked (invariant 1). A target given as a folder is found by its content sha.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from registry.errors import RegistryError, SearchError


@dataclass(frozen=True)
class Pinned:
    """A repo pinned to a revision, with the local folder holding exactly that revision."""

    repo_id: str
    revision: str
    path: Path
    source: str


@dataclass(frozen=True)
class Resolved:
    """The target, the base it was checked against, and the registry's id of that base."""

    target: Pinned
    base: Pinned
    base_id: int


def _open(source: str):
    from registry.sources import open_source

    if source.startswith(("http://", "https://")):
        return open_source("hub", endpoint=source)
    return open_source(source)


def model_dir(*, source: str, repo_id: str, revision: str) -> Path:
    """The folder of `repo_id` at `revision` from the source the registry recorded.

    Raises:
        RegistryError: if the source no longer holds that revision.
    """
    return Path(_open(source).model_dir(repo_id, revision))


def resolve_target(target: str, *, db_url: str | None = None) -> Resolved:
    """Find the target in the registry and check it is compatible with its base.

    Args:
        target: a repo id as synced, or a model folder (matched by content sha); a synced base is its own
            target.
        db_url: taskvec database URL.

    Returns:
        The pinned target and base.

    Raises:
        SearchError: empty registry, target not synced, or not compatible with the base.
        RegistryError: if a pinned folder cannot be found.
    """
    from registry.db import session_scope
    from registry.models import BaseModel, Checkpoint

    folder = Path(target).expanduser()
    revision = None
    if folder.is_dir():
        from registry.sources.local import content_sha

        revision = content_sha(folder)
    with session_scope(db_url) as session:
        if session.execute(select(Checkpoint.id).limit(1)).first() is None:
            raise SearchError(
                "the registry is empty: run `taskvec registry sync --base BASE --source SRC` first"
            )
        query = select(Checkpoint, BaseModel).join(BaseModel, Checkpoint.base_id == BaseModel.id)
        if revision is not None:
            query = query.where(Checkpoint.revision == revision)
        else:
            query = query.where(Checkpoint.repo_id == target)
        rows = session.execute(query.order_by(Checkpoint.checked_at.desc())).all()
        if not rows:
            # The base itself is a valid target (theta_T = theta_base: a multi-task model from scratch).
            base_query = select(BaseModel).order_by(BaseModel.id.desc())
            if revision is not None:
                base_query = base_query.where(BaseModel.revision == revision)
            else:
                base_query = base_query.where(BaseModel.repo_id == target)
            base_row = session.execute(base_query).scalars().first()
            if base_row is not None:
                b = (base_row.repo_id, base_row.revision, base_row.source, base_row.id)
                base_dir = (
                    folder if revision is not None else model_dir(source=b[2], repo_id=b[0], revision=b[1])
                )
                pinned = Pinned(repo_id=b[0], revision=b[1], path=base_dir, source=b[2])
                return Resolved(target=pinned, base=pinned, base_id=b[3])
            raise SearchError(
                f"{target}: target not in the registry; sync it first "
                "(`taskvec registry sync --base BASE --source SRC`)"
            )
        compatible = [(c, b) for c, b in rows if c.status == "compatible"]
        if not compatible:
            ckpt, base = rows[0]
            raise SearchError(
                f"{target}: target is {ckpt.status} with base {base.repo_id} ({ckpt.reason or 'no reason'}); "
                "a target must be compatible with the base"
            )
        ckpt, base = compatible[0]
        t = (ckpt.repo_id, ckpt.revision, ckpt.source)
        b = (base.repo_id, base.revision, base.source, base.id)
    target_dir = folder if revision is not None else model_dir(source=t[2], repo_id=t[0], revision=t[1])
    base_dir = model_dir(source=b[2], repo_id=b[0], revision=b[1])
    return Resolved(
        target=Pinned(repo_id=t[0], revision=t[1], path=target_dir, source=t[2]),
        base=Pinned(repo_id=b[0], revision=b[1], path=base_dir, source=b[2]),
        base_id=b[3],
    )


def compatible_candidates(resolved: Resolved, *, db_url: str | None = None) -> list[Pinned]:
    """Every compatible checkpoint of the target's base, except the target and the base themselves.

    Returns:
        Pinned candidates sorted by repo id (deterministic order).
    """
    from registry.db import session_scope
    from registry.models import Checkpoint

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


def pin_dir(candidate: Pinned) -> Pinned:
    """The candidate with its folder resolved (downloads a Hub revision when needed)."""
    path = model_dir(source=candidate.source, repo_id=candidate.repo_id, revision=candidate.revision)
    return Pinned(repo_id=candidate.repo_id, revision=candidate.revision, path=path, source=candidate.source)


def candidate_dirs(candidates: Sequence[dict[str, Any]], *, db_url: str | None = None) -> list[Path]:
    """Folders of (repo_id, revision) pairs recorded in a study or a leaderboard row.

    Raises:
        SearchError: if a pair is no longer in the registry as compatible.
    """
    from registry.db import session_scope
    from registry.models import Checkpoint

    dirs = []
    with session_scope(db_url) as session:
        sources = {}
        for cand in candidates:
            row = session.execute(
                select(Checkpoint.source).where(
                    Checkpoint.repo_id == cand["repo_id"],
                    Checkpoint.revision == cand["revision"],
                    Checkpoint.status == "compatible",
                )
            ).first()
            if row is None:
                raise SearchError(
                    f"{cand['repo_id']}@{cand['revision'][:12]}: no longer a compatible registry entry "
                    "(re-sync the registry, or start a new study)"
                )
            sources[(cand["repo_id"], cand["revision"])] = row[0]
    for cand in candidates:
        try:
            dirs.append(
                model_dir(
                    source=sources[(cand["repo_id"], cand["revision"])],
                    repo_id=cand["repo_id"],
                    revision=cand["revision"],
                )
            )
        except RegistryError as exc:
            raise SearchError(f"{cand['repo_id']}: {exc}") from exc
    return dirs


def load_vectors(
    *, base_dir: Path, base_revision: str, candidates: Sequence[tuple[Path, str]], cache_dir: Path | None
) -> list:
    """Task vectors of (folder, revision) candidates against the base, through the vector cache."""
    from search.vectors.taskvector import load_vector

    return [
        load_vector(
            base_dir=base_dir,
            base_revision=base_revision,
            candidate_dir=path,
            candidate_revision=revision,
            cache_dir=cache_dir,
        )
        for path, revision in candidates
    ]


def screened_candidates(
    *, task: str, target_revision: str, split_fingerprint: str, db_url: str | None = None
) -> list[dict[str, Any]]:
    """Screenings of this target on this search split, as dicts (see `search.tables.Screening`)."""
    from registry.db import session_scope
    from search.tables import Screening

    with session_scope(db_url) as session:
        rows = (
            session.execute(
                select(Screening).where(
                    Screening.task == task,
                    Screening.target_revision == target_revision,
                    Screening.split_fingerprint == split_fingerprint,
                )
            )
            .scalars()
            .all()
        )
        return [screening_dict(r) for r in rows]


def screening_dict(row) -> dict[str, Any]:
    """A screening row as a JSON-ready dict."""
    out = {c.name: getattr(row, c.name) for c in row.__table__.columns}
    if out.get("created") is not None:
        out["created"] = out["created"].isoformat()
    return out


def base_dir_of(*, repo_id: str, revision: str, db_url: str | None = None) -> Path:
    """Folder of a base model recorded in the registry at `revision`.

    Raises:
        SearchError: if the registry has no such base.
    """
    from registry.db import session_scope
    from registry.models import BaseModel

    with session_scope(db_url) as session:
        row = session.execute(
            select(BaseModel.source).where(BaseModel.repo_id == repo_id, BaseModel.revision == revision)
        ).first()
    if row is None:
        raise SearchError(f"{repo_id}@{revision[:12]}: base not in the registry (re-sync the registry)")
    return model_dir(source=row[0], repo_id=repo_id, revision=revision)


def screened_targets(
    *, task: str, split_fingerprint: str, base: Resolved, db_url: str | None = None
) -> list[Pinned]:
    """The targets screened for `task` on this split, compatible with `base.base` (folders unresolved)."""
    from registry.db import session_scope
    from registry.models import Checkpoint
    from search.tables import Screening

    with session_scope(db_url) as session:
        rows = session.execute(
            select(Screening.target_repo, Screening.target_revision, Checkpoint.source)
            .join(
                Checkpoint,
                (Checkpoint.repo_id == Screening.target_repo)
                & (Checkpoint.revision == Screening.target_revision),
            )
            .where(
                Screening.task == task,
                Screening.split_fingerprint == split_fingerprint,
                Screening.base_revision == base.base.revision,
                Checkpoint.base_id == base.base_id,
                Checkpoint.status == "compatible",
            )
            .distinct()
            .order_by(Screening.target_repo, Screening.target_revision)
        ).all()
    return [Pinned(repo_id=repo, revision=rev, path=Path(), source=source) for repo, rev, source in rows]


def resolve_references(
    *,
    tasks: Sequence[str],
    explicit: dict[str, str],
    resolved: Resolved,
    fingerprints: dict[str, str],
    db_url: str | None = None,
) -> dict[str, Pinned]:
    """Each task's own fine-tuned model (its *reference*) for a multi-task search.

    A task named in `explicit` takes that repo or folder; any other takes the one target the registry
    screened for it on the same search split against the same base (`taskvec screen` records it).

    Args:
        tasks: the searched tasks.
        explicit: task -> repo id or folder, from `--reference`.
        resolved: the search's target and base.
        fingerprints: task -> fingerprint of its search split.
        db_url: taskvec database URL.

    Returns:
        task -> pinned reference, in the order of `tasks`.

    Raises:
        SearchError: a reference that is not compatible with the same base, or none (or several) screened.
    """
    out: dict[str, Pinned] = {}
    for task in tasks:
        if task in explicit:
            ref = resolve_target(explicit[task], db_url=db_url)
            if ref.base.revision != resolved.base.revision:
                raise SearchError(
                    f"--reference {task}={explicit[task]}: checked against base {ref.base.repo_id}@"
                    f"{ref.base.revision[:8]}, not the target's {resolved.base.repo_id}@{resolved.base.revision[:8]}"
                )
            out[task] = ref.target
            continue
        found = screened_targets(
            task=task,
            split_fingerprint=fingerprints[task],
            base=resolved,
            db_url=db_url,
        )
        if not found:
            raise SearchError(
                f"{task}: no fine-tuned model of this task is known; name one with --reference {task}=REPO, "
                f"or screen it first (`taskvec screen --task {task} --target REPO`, same --data)"
            )
        if len(found) > 1:
            names = ", ".join(f"{p.repo_id}@{p.revision[:8]}" for p in found)
            raise SearchError(
                f"{task}: several fine-tuned models were screened ({names}); choose one with --reference"
            )
        try:
            out[task] = pin_dir(found[0])
        except RegistryError as exc:
            raise SearchError(f"{found[0].repo_id}: {exc}") from exc
    return out
