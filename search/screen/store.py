"""The screenings table: what screening stored, and the questions asked of it.

Each candidate's row is committed on its own as soon as it is scored, so a killed screening loses at most
the candidate in flight; a rerun skips what this (task, target revision, split fingerprint) already has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from registry.db import session_scope
from registry.models import Checkpoint
from registry.pins import Pinned, Resolved
from search.tables import Screening
from search.tasks.glue import get_task


def already_screened(*, task: str, target_revision: str, fingerprint: str, db_url: str | None) -> set[str]:
    """Revisions of the candidates already screened for this target on this split (a rerun skips them)."""
    with session_scope(db_url) as session:
        return set(
            session.execute(
                select(Screening.candidate_revision).where(
                    Screening.task == task,
                    Screening.target_revision == target_revision,
                    Screening.split_fingerprint == fingerprint,
                )
            ).scalars()
        )


def save_screening(row: dict[str, Any], *, db_url: str | None) -> None:
    """Commit one screening on its own, so a killed run keeps every candidate it finished."""
    try:
        with session_scope(db_url) as session:
            session.add(Screening(**row))
    except IntegrityError:
        pass  # another process screened the same candidate on the same split meanwhile: same result


def screened_candidates(
    *, task: str, target_revision: str, split_fingerprint: str, db_url: str | None = None
) -> list[dict[str, Any]]:
    """Screenings of this target on this search split, as dicts (see `search.tables.Screening`)."""
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


def screened_targets(
    *, task: str, split_fingerprint: str, base: Resolved, db_url: str | None = None
) -> list[Pinned]:
    """The targets screened for `task` on this split, compatible with `base.base` (folders unresolved)."""
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


def helpful_for(task: str, *, db_url: str | None = None) -> list[dict[str, Any]]:
    """Screened candidates ranked by their best gain on `task` (over targets and splits), best first.

    Returns:
        One dict per (candidate repo, revision): `repo_id`, `revision`, `status`, `reason` (from the
        registry), `gain`, `best_lambda`, `best_score`, `target_score`, `target_repo`, `n_screenings`.

    Raises:
        DataError: for an unknown task.
    """
    get_task(task)
    best: dict[tuple[str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str], int] = {}
    with session_scope(db_url) as session:
        for s in session.execute(select(Screening).where(Screening.task == task)).scalars():
            key = (s.candidate_repo, s.candidate_revision)
            counts[key] = counts.get(key, 0) + 1
            if key not in best or s.gain > best[key]["gain"]:
                best[key] = {
                    "repo_id": s.candidate_repo,
                    "revision": s.candidate_revision,
                    "gain": s.gain,
                    "best_lambda": s.best_lambda,
                    "best_score": s.best_score,
                    "target_score": s.target_score,
                    "target_repo": s.target_repo,
                }
        verdicts = {
            (repo, rev): (status, reason)
            for repo, rev, status, reason in session.execute(
                select(Checkpoint.repo_id, Checkpoint.revision, Checkpoint.status, Checkpoint.reason)
            )
        }
    rows = []
    for key, row in best.items():
        status, reason = verdicts.get(key, ("unknown", "no longer in the registry at this revision"))
        rows.append({**row, "status": status, "reason": reason, "n_screenings": counts[key]})
    return sorted(rows, key=lambda r: (-r["gain"], r["repo_id"]))


HELPFUL_COLUMNS = (
    "repo_id",
    "revision",
    "status",
    "gain",
    "best_lambda",
    "best_score",
    "target_score",
    "target_repo",
)
