"""The screenings table: what screening stored, and the questions asked of it.

Each candidate's row is committed on its own as soon as it is scored, so a killed screening loses at most
the candidate in flight; a rerun skips what this (task, target revision, split fingerprint) already has.
A racing screen replaces a candidate's row after each round it finishes, so a killed race keeps every
finished round; rows it dropped keep the prefix they were scored on and rank below full-split rows
(`screening_state`, `rank_key`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from registry.db import session_scope
from registry.models import Checkpoint
from registry.pins import Pinned, Resolved
from search.scoring.scorer import ScoreResult
from search.tables import Screening, ScreeningLogprobs, screening_state
from search.tasks.glue import get_task

# float32: a screened lambda's predictions must come back exactly (the surrogate reproduces its score);
# float16 would flip the argmax of examples whose label log-probs differ by less than its rounding.
LOGPROB_DTYPE = np.float32


def rank_key(row: Mapping[str, Any]) -> tuple[bool, float, str]:
    """Sort key of screening dicts: full-split rows first (a prefix's gain is not comparable), then by
    best gain, then by repo id."""
    return (screening_state(row) != "full", -float(row["gain"]), str(row["candidate_repo"]))


def stored_states(
    *, task: str, target_revision: str, fingerprint: str, db_url: str | None
) -> dict[str, tuple[str, int | None]]:
    """Candidate revision -> (`screening_state`, n_scored) of this target's screenings on this split."""
    with session_scope(db_url) as session:
        rows = session.execute(
            select(
                Screening.candidate_revision, Screening.n_scored, Screening.eliminated_round, Screening.scorer
            ).where(
                Screening.task == task,
                Screening.target_revision == target_revision,
                Screening.split_fingerprint == fingerprint,
            )
        ).all()
    return {
        rev: (screening_state({"n_scored": n, "eliminated_round": out, "scorer": scorer}), n)
        for rev, n, out, scorer in rows
    }


def already_screened(*, task: str, target_revision: str, fingerprint: str, db_url: str | None) -> set[str]:
    """Revisions of the candidates already screened for this target on this split (a rerun skips them):
    full-split rows and candidates a race dropped, not those a killed race left still racing."""
    states = stored_states(task=task, target_revision=target_revision, fingerprint=fingerprint, db_url=db_url)
    return {rev for rev, (state, _) in states.items() if state != "racing"}


def save_screening(
    row: dict[str, Any], *, db_url: str | None, target: ScoreResult | None = None, replace: bool = False
) -> None:
    """Commit one screening on its own, so a killed run keeps every candidate it finished.

    Args:
        row: the screening's columns; an entry of `row["lambdas"]` may carry its `ScoreResult` under
            `"result"`, whose per-example label log-probs are stored (`ScreeningLogprobs`) and which is
            left out of the JSON column.
        db_url: taskvec database URL.
        target: the target's own result on the split, stored as lambda 0 (the surrogate's origin).
        replace: replace this candidate's row on this split, if any (a racing screen's next round), in
            the same transaction.
    """
    row = dict(row)
    results = [(0.0, target)] if target is not None else []
    lambdas = []
    for entry in row.get("lambdas", []):
        entry = dict(entry)
        result = entry.pop("result", None)
        if result is not None:
            results.append((float(entry["lambda"]), result))
        lambdas.append(entry)
    row["lambdas"] = lambdas
    try:
        with session_scope(db_url) as session:
            if replace:
                _delete_same(session, row)
            screening = Screening(**row)
            screening.logprobs = [_logprobs_row(lam, r) for lam, r in results if r.label_logprobs.size]
            session.add(screening)
    except IntegrityError:
        pass  # another process screened the same candidate on the same split meanwhile: same result


def _delete_same(session, row: Mapping[str, Any]) -> None:
    """Delete the stored screening with `row`'s unique key (its log-probs go with it)."""
    old = session.execute(
        select(Screening).where(
            Screening.task == row["task"],
            Screening.target_revision == row["target_revision"],
            Screening.candidate_revision == row["candidate_revision"],
            Screening.split_fingerprint == row["split_fingerprint"],
        )
    ).scalar_one_or_none()
    if old is not None:
        session.delete(old)
        session.flush()  # the unique key is free before the new row is inserted


def _logprobs_row(lam: float, result: ScoreResult) -> ScreeningLogprobs:
    logp = np.ascontiguousarray(result.label_logprobs, dtype=LOGPROB_DTYPE)
    return ScreeningLogprobs(
        lam=lam,
        n=int(logp.shape[0]),
        n_labels=int(logp.shape[1]),
        positions=np.ascontiguousarray(result.positions, dtype=np.int32).tobytes(),
        logprobs=logp.tobytes(),
    )


@dataclass(frozen=True)
class LambdaLogprobs:
    """One screened lambda's per-example label log-probs.

    Attributes:
        lam: the lambda (0.0: the target alone).
        positions: (n,) each example's row in the search split.
        logprobs: (n, n_labels) float32, columns in the task's label id order.
    """

    lam: float
    positions: np.ndarray
    logprobs: np.ndarray


def decode_logprobs(row: ScreeningLogprobs) -> LambdaLogprobs:
    """A stored row as arrays."""
    positions = np.frombuffer(row.positions, dtype=np.int32).astype(np.int64)
    logprobs = np.frombuffer(row.logprobs, dtype=LOGPROB_DTYPE).reshape(row.n, row.n_labels)
    return LambdaLogprobs(lam=float(row.lam), positions=positions, logprobs=logprobs.copy())


def screening_logprobs(
    *, task: str, target_revision: str, split_fingerprint: str, db_url: str | None = None
) -> dict[str, list[LambdaLogprobs]]:
    """Candidate revision -> its stored lambdas (target's lambda 0 included), ascending, for this target
    on this search split; a screening stored before log-probs were kept maps to an empty list."""
    out: dict[str, list[LambdaLogprobs]] = {}
    with session_scope(db_url) as session:
        screenings = session.execute(
            select(Screening).where(
                Screening.task == task,
                Screening.target_revision == target_revision,
                Screening.split_fingerprint == split_fingerprint,
            )
        ).scalars()
        for s in screenings:
            out[s.candidate_revision] = sorted((decode_logprobs(r) for r in s.logprobs), key=lambda x: x.lam)
    return out


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
    """Screened candidates ranked by their best gain on `task` (over targets and splits), best first;
    a candidate's full-split screenings before those a race dropped on a prefix, which rank last.

    Returns:
        One dict per (candidate repo, revision): `repo_id`, `revision`, `status`, `reason` (from the
        registry), `state` and `n_scored` (`screening_state`), `gain`, `best_lambda`, `best_score`,
        `target_score`, `target_repo`, `n_screenings`.

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
            state = screening_state(screening_dict(s))
            if key not in best or (state == "full", s.gain) > (
                best[key]["state"] == "full",
                best[key]["gain"],
            ):
                best[key] = {
                    "state": state,
                    "n_scored": s.n_scored,
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
    return sorted(rows, key=lambda r: (r["state"] != "full", -r["gain"], r["repo_id"]))


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
