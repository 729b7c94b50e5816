"""Crawl a source, check every repo against a base, and upsert one row per repo (idempotent, resumable).

Each repo is committed as soon as it is checked, so a kill loses at most the repo in flight; a rerun
skips repos already checked at the same revision and re-checks those whose revision moved.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from registry.compat import STATUS_UNVERIFIED, STATUSES, BaseProfile, CheckReport, check_repo, profile_base
from registry.db import session_scope
from registry.errors import RegistryError
from registry.models import BaseModel, Checkpoint, utcnow
from registry.progress import counted_columns, progress_bar
from registry.sources import RepoInfo, Source, open_source, validate_repo_id
from registry.sources.local import source_for_folder


@dataclass(frozen=True)
class SyncSummary:
    """What one sync did."""

    base_repo_id: str
    base_revision: str
    source: str
    checked: int
    skipped: int
    by_status: dict[str, int]
    by_reason: dict[str, int]
    errors: list[str] = field(default_factory=list)
    bytes_read: int = 0


def resolve_base(base: str, source: Source) -> tuple[Source, RepoInfo]:
    """The base repo pinned to its revision: a folder path, or a repo id in `source`.

    Raises:
        RegistryError: if the base cannot be found.
    """
    path = Path(base).expanduser()
    if path.is_dir():
        base_source, repo_id = source_for_folder(path)
        return base_source, base_source.repo_info(repo_id)
    return source, source.repo_info(validate_repo_id(base))


def _upsert_base(profile: BaseProfile, *, db_url: str | None) -> int:
    with session_scope(db_url) as session:
        row = session.scalars(
            select(BaseModel).filter_by(
                source=profile.source, repo_id=profile.repo_id, revision=profile.revision
            )
        ).one_or_none()
        if row is None:
            row = BaseModel(source=profile.source, repo_id=profile.repo_id, revision=profile.revision)
            session.add(row)
        row.architecture = profile.architecture
        row.config_fingerprint = profile.config_fingerprint
        row.tokenizer_fingerprint = profile.tokenizer_fingerprint
        row.tensor_fingerprint = profile.tensor_fingerprint
        row.last_seen = utcnow()
        try:
            session.flush()
        except IntegrityError:  # a concurrent sync inserted it first
            session.rollback()
            row = session.scalars(
                select(BaseModel).filter_by(
                    source=profile.source, repo_id=profile.repo_id, revision=profile.revision
                )
            ).one()
        return row.id


def _apply(row: Checkpoint, info: RepoInfo, report: CheckReport | None) -> None:
    row.last_seen = utcnow()
    row.downloads = info.downloads
    row.likes = info.likes
    row.last_modified = info.last_modified
    if report is None:
        return
    row.revision = info.revision
    row.status = report.status
    row.reason = report.reason
    row.reason_code = report.reason_code
    row.architecture = report.architecture
    row.model_type = report.model_type
    row.config_fingerprint = report.config_fingerprint
    row.tokenizer_fingerprint = report.tokenizer_fingerprint
    row.tensor_fingerprint = report.tensor_fingerprint
    row.lineage_distance = report.lineage_distance
    row.weights_verified = report.weights_verified
    row.card_base_model = list(info.card.base_model)
    row.card_datasets = list(info.card.datasets)
    row.card_license = info.card.license
    row.card_tags = list(info.card.tags)
    row.size_bytes = info.size
    row.checked_at = utcnow()


def _checked(base_id: int, source_name: str, repo_id: str, *, db_url: str | None) -> tuple[str, str] | None:
    """(revision, status) of the repo's row, if it was checked before."""
    with session_scope(db_url) as session:
        row = session.execute(
            select(Checkpoint.revision, Checkpoint.status).filter_by(
                base_id=base_id, source=source_name, repo_id=repo_id
            )
        ).one_or_none()
        return (row[0], row[1]) if row else None


def _save(
    base_id: int, source_name: str, info: RepoInfo, report: CheckReport | None, *, db_url: str | None
) -> None:
    """Insert or update the repo's row in its own transaction (committed before the next repo)."""
    for attempt in range(2):
        with session_scope(db_url) as session:
            row = session.scalars(
                select(Checkpoint).filter_by(base_id=base_id, source=source_name, repo_id=info.repo_id)
            ).one_or_none()
            if row is None:
                if report is None:
                    return
                row = Checkpoint(
                    base_id=base_id, source=source_name, repo_id=info.repo_id, first_seen=utcnow()
                )
                session.add(row)
            _apply(row, info, report)
            try:
                session.flush()
                return
            except IntegrityError:
                if attempt:
                    raise
                session.rollback()  # another worker inserted the row: update it instead


@dataclass(frozen=True)
class _Run:
    """What every repo of one sync is checked with."""

    source: Source
    profile: BaseProfile
    base_id: int
    db_url: str | None
    verify_weights: bool
    verify_pickles: bool
    recheck: bool


def _listed(
    src: Source, base_info: RepoInfo, *, search: str | None, filters: tuple[str, ...], limit: int | None
) -> list[str]:
    """The repo ids to check: the source's listing without the base, at most `limit`."""
    # One more than `limit` from the listing, in case the base itself is among them.
    listing = src.list_repos(search=search, filters=filters, limit=limit + 1 if limit is not None else None)
    listed = (r for r in listing if r != base_info.repo_id)
    return list(itertools.islice(listed, limit))


def _sync_one(run: _Run, repo_id: str) -> CheckReport | None:
    """Check one repo and commit its row; None when its revision was already checked (row refreshed only).

    Raises:
        RegistryError: if the repo cannot be reached now (nothing recorded; retried next run).
    """
    src = run.source
    validate_repo_id(repo_id)
    info = src.repo_info(repo_id)
    before = _checked(run.base_id, src.name, repo_id, db_url=run.db_url)
    unchanged = before is not None and before[0] == info.revision
    if unchanged and run.verify_pickles and before[1] == STATUS_UNVERIFIED:
        unchanged = False  # asked to verify what an earlier run left unverified
    if unchanged and not run.recheck:
        _save(run.base_id, src.name, info, None, db_url=run.db_url)  # refresh last_seen and popularity
        return None
    report = check_repo(
        src, info, run.profile, verify_weights=run.verify_weights, verify_pickles=run.verify_pickles
    )
    _save(run.base_id, src.name, info, report, db_url=run.db_url)
    return report


def _progress(*, enabled: bool) -> Progress:
    return progress_bar(*counted_columns("[bold]sync[/] {task.description}"), enabled=enabled)


def _tally(run: _Run, repo_ids: list[str]) -> tuple[Counter[str], Counter[str]]:
    """Counts by status and by reason code over the listed repos' rows (this run's and earlier verdicts)."""
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    with session_scope(run.db_url) as session:
        for status, reason_code in session.execute(
            select(Checkpoint.status, Checkpoint.reason_code).where(
                Checkpoint.base_id == run.base_id,
                Checkpoint.source == run.source.name,
                Checkpoint.repo_id.in_(repo_ids),
            )
        ):
            by_status[status] += 1
            if reason_code:
                by_reason[reason_code] += 1
    return by_status, by_reason


def sync(
    *,
    base: str,
    source: str | Source = "hub",
    search: str | None = None,
    filters: tuple[str, ...] = (),
    limit: int | None = None,
    db_url: str | None = None,
    verify_weights: bool = True,
    verify_pickles: bool = False,
    recheck: bool = False,
    progress: bool = True,
    on_checked: Callable[[CheckReport], None] | None = None,
) -> SyncSummary:
    """Check every repo of `source` against `base` and record the verdicts.

    Args:
        base: repo id (in `source`) or folder of the pretrained base.
        source: `hub`, a folder laid out like the Hub, or a `Source`.
        search: only repo ids containing this string.
        filters: Hub tag filters (e.g. `base_model:finetune:google-t5/t5-base`, `t5`).
        limit: check at most this many repos.
        db_url: database URL (default `TASKVEC_DB` / SQLite under `TASKVEC_HOME`).
        verify_weights: fetch and scan the weights of repos that pass the metadata checks.
        verify_pickles: download pickle-only repos and check them (torch.load with weights_only=True);
            without it they stay `unverified`.
        recheck: check repos again even if their revision is unchanged.
        progress: show a progress bar.
        on_checked: called after each repo's row is committed.

    Returns:
        Counts by status and by reason code, and the repos that could not be reached (retried on rerun).

    Raises:
        RegistryError: if the source or base cannot be opened.
    """
    src = open_source(source) if isinstance(source, str | Path) else source
    base_source, base_info = resolve_base(base, src)
    profile = profile_base(base_source, base_info)
    run = _Run(
        source=src,
        profile=profile,
        base_id=_upsert_base(profile, db_url=db_url),
        db_url=db_url,
        verify_weights=verify_weights,
        verify_pickles=verify_pickles,
        recheck=recheck,
    )
    repo_ids = _listed(src, base_info, search=search, filters=filters, limit=limit)
    errors: list[str] = []
    checked = skipped = 0
    with _progress(enabled=progress) as bar:
        task = bar.add_task("", total=len(repo_ids))
        for repo_id in repo_ids:
            bar.update(task, description=repo_id)
            try:
                report = _sync_one(run, repo_id)
                if report is None:
                    skipped += 1
                else:
                    checked += 1
                    if on_checked is not None:
                        on_checked(report)
            except RegistryError as exc:  # unreachable now (404, rate limit, network): retried next run
                errors.append(str(exc))
            bar.advance(task)
    by_status, by_reason = _tally(run, repo_ids)
    return SyncSummary(
        base_repo_id=profile.repo_id,
        base_revision=profile.revision,
        source=src.name,
        checked=checked,
        skipped=skipped,
        by_status=dict(by_status),
        by_reason=dict(by_reason),
        errors=errors,
        bytes_read=src.bytes_read + (base_source.bytes_read if base_source is not src else 0),
    )


def list_checkpoints(
    *,
    db_url: str | None = None,
    status: str | None = None,
    base: str | None = None,
    repo_id: str | None = None,
) -> list[dict]:
    """Registry rows as dicts (`repo_id`, `revision`, `status`, `reason`, metadata, `base_repo_id`, ...).

    Args:
        db_url: database URL.
        status: only this status.
        base: only checkpoints checked against this base repo id.
        repo_id: only this repo.

    Returns:
        Rows sorted by base, status and repo id.

    Raises:
        RegistryError: for an unknown status.
    """
    if status is not None and status not in STATUSES:
        raise RegistryError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")
    query = select(Checkpoint).join(BaseModel).options(selectinload(Checkpoint.base))
    if status:
        query = query.where(Checkpoint.status == status)
    if base:
        query = query.where(BaseModel.repo_id == base)
    if repo_id:
        query = query.where(Checkpoint.repo_id == repo_id)
    query = query.order_by(BaseModel.repo_id, Checkpoint.status, Checkpoint.repo_id)
    with session_scope(db_url) as session:
        return [row.as_dict() for row in session.scalars(query)]


def show_checkpoint(repo_id: str, *, db_url: str | None = None) -> list[dict]:
    """Every row for one repo (one per base it was checked against).

    Raises:
        RegistryError: if the repo is not in the registry.
    """
    rows = list_checkpoints(db_url=db_url, repo_id=repo_id)
    if not rows:
        raise RegistryError(f"{repo_id}: not in the registry (run `taskvec registry sync` first)")
    return rows


LIST_COLUMNS = ("repo_id", "revision", "status", "reason", "lineage_distance", "base_repo_id", "source")


def format_rows(rows: list[dict], *, fmt: str) -> str:
    """Rows as `json` (every field) or `csv` (the main columns)."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LIST_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
