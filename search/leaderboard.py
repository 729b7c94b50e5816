"""The leaderboard: one row per completed search trial, and the queries users run in the morning.

Rows are written by the search right after each trial completes (idempotent upsert on (study, trial
number)), so a crash loses at most the trial in flight. The best composition of a task is chosen on the
search split only (invariant 2); held-out scores sit beside it, computed for the top trials after the
search (`refresh_heldout`), never used to rank.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from registry.errors import SearchError
from search.tables import LeaderboardRow, utcnow

# Keys of a row dict (`taskvec leaderboard --json`), item 3 of the search issue first.
ROW_KEYS = (
    "task",
    "study",
    "trial_number",
    "score_search",
    "score_heldout",
    "metrics",
    "target_score_search",
    "target_score_heldout",
    "gain_search",
    "gain_heldout",
    "ingredients",
    "method",
    "method_options",
    "scorer",
    "split_fingerprints",
    "worker",
    "created",
    "target_repo",
    "target_revision",
    "base_repo",
    "base_revision",
    "scores",
    "objective",
    "constraints",
    "pareto",
    "state",
    "examples_scored",
    "heldout_at",
)
CSV_KEYS = (
    "task",
    "study",
    "trial_number",
    "score_search",
    "score_heldout",
    "target_score_search",
    "target_score_heldout",
    "gain_search",
    "gain_heldout",
    "ingredients",
    "method",
    "worker",
    "created",
)
# Columns a re-written trial may not clear: held-out results computed after the trial.
_KEEP_ON_UPDATE = ("score_heldout", "heldout_at", "id", "created")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def row_dict(row: LeaderboardRow) -> dict[str, Any]:
    """A leaderboard row as a JSON-ready dict with `ROW_KEYS`."""
    out = {c.name: _iso(getattr(row, c.name)) for c in row.__table__.columns}
    out["gain_search"] = out["score_search"] - out["target_score_search"]
    heldout, target_heldout = out["score_heldout"], out["target_score_heldout"]
    out["gain_heldout"] = None if heldout is None or target_heldout is None else heldout - target_heldout
    return {k: out.get(k) for k in ROW_KEYS}


def upsert_rows(rows: Iterable[dict[str, Any]], *, db_url: str | None = None) -> int:
    """Insert or update rows keyed by (study, trial_number); held-out results already there are kept.

    Returns:
        The number of rows written.
    """
    from registry.db import session_scope

    n = 0
    for values in rows:
        for attempt in range(2):
            try:
                with session_scope(db_url) as session:
                    existing = session.execute(
                        select(LeaderboardRow).where(
                            LeaderboardRow.study == values["study"],
                            LeaderboardRow.trial_number == values["trial_number"],
                        )
                    ).scalar_one_or_none()
                    if existing is None:
                        session.add(LeaderboardRow(**{k: v for k, v in values.items() if v is not None}))
                    else:
                        for key, value in values.items():
                            if key not in _KEEP_ON_UPDATE and not (
                                key == "target_score_heldout" and value is None
                            ):
                                setattr(existing, key, value)
                break
            except IntegrityError:
                if attempt == 1:
                    raise  # the row exists yet cannot be read back: a real inconsistency
        n += 1
    return n


def existing_trial_numbers(*, study: str, db_url: str | None = None) -> set[int]:
    """Trial numbers of `study` already on the leaderboard."""
    from registry.db import session_scope

    with session_scope(db_url) as session:
        return set(
            session.execute(
                select(LeaderboardRow.trial_number).where(LeaderboardRow.study == study)
            ).scalars()
        )


def query(
    *, db_url: str | None = None, task: str | None = None, study: str | None = None, top: int | None = None
) -> list[dict[str, Any]]:
    """Leaderboard rows, best search score first.

    Args:
        db_url: taskvec database URL.
        task: only this task.
        study: only this study.
        top: at most this many rows per task.

    Returns:
        Row dicts with `ROW_KEYS`.
    """
    from registry.db import session_scope

    stmt = select(LeaderboardRow)
    if task:
        stmt = stmt.where(LeaderboardRow.task == task)
    if study:
        stmt = stmt.where(LeaderboardRow.study == study)
    stmt = stmt.order_by(
        LeaderboardRow.task,
        LeaderboardRow.score_search.desc(),
        LeaderboardRow.study,
        LeaderboardRow.trial_number,
    )
    with session_scope(db_url) as session:
        rows = [row_dict(r) for r in session.execute(stmt).scalars()]
    if top is None:
        return rows
    kept: list[dict[str, Any]] = []
    per_task: dict[str, int] = {}
    for row in rows:
        per_task[row["task"]] = per_task.get(row["task"], 0) + 1
        if per_task[row["task"]] <= top:
            kept.append(row)
    return kept


def study_best(*, study: str, db_url: str | None = None) -> dict[str, Any] | None:
    """The study's best row by search score (None when it has no completed trial)."""
    rows = query(db_url=db_url, study=study, top=1)
    return rows[0] if rows else None


def summary(
    *, db_url: str | None = None, task: str | None = None, study: str | None = None
) -> list[dict[str, Any]]:
    """Per task: the target against the best composition (chosen on the search split) and the gains.

    Returns:
        One dict per task: `task`, `study`, `trial_number`, `target_repo`, `target_score_search`,
        `target_score_heldout`, `best_score_search`, `best_score_heldout`, `gain_search`, `gain_heldout`,
        `ingredients`, `method`, `n_rows`.
    """
    rows = query(db_url=db_url, task=task, study=study)
    out: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["task"]] = counts.get(row["task"], 0) + 1
        if row["task"] in out:
            continue  # rows come best first per task
        out[row["task"]] = {
            "task": row["task"],
            "study": row["study"],
            "trial_number": row["trial_number"],
            "target_repo": row["target_repo"],
            "target_score_search": row["target_score_search"],
            "target_score_heldout": row["target_score_heldout"],
            "best_score_search": row["score_search"],
            "best_score_heldout": row["score_heldout"],
            "gain_search": row["gain_search"],
            "gain_heldout": row["gain_heldout"],
            "ingredients": row["ingredients"],
            "method": row["method"],
        }
    return [{**v, "n_rows": counts[k]} for k, v in out.items()]


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV (`CSV_KEYS`; ingredients as `repo@rev12=coef;...`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_KEYS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = dict(row)
        flat["ingredients"] = ";".join(
            f"{i['repo_id']}@{i['revision'][:12]}={i['coefficient']:.4f}" for i in row["ingredients"]
        )
        writer.writerow(flat)
    return buf.getvalue()


# --- held-out scores of finished results -------------------------------------------------------------


class _Rebuilder:
    """Loads one target once and recomposes any of its leaderboard rows on the held-out split."""

    def __init__(self, row: dict[str, Any], *, data_dir: Path | None, db_url: str | None) -> None:
        from search.data import load_split
        from search.modeling import load_seq2seq
        from search.resolve import base_dir_of, candidate_dirs
        from search.scoring import Scorer

        self.db_url = db_url
        self.row = row
        target = {"repo_id": row["target_repo"], "revision": row["target_revision"]}
        self.target_dir = candidate_dirs([target], db_url=db_url)[0]
        self.base_dir = base_dir_of(repo_id=row["base_repo"], revision=row["base_revision"], db_url=db_url)
        settings = row["scorer"]
        if data_dir is None and settings.get("data") not in (None, "hub"):
            data_dir = Path(settings["data"])
        split = load_split(row["task"], split="heldout", data_dir=data_dir)
        expected = row["split_fingerprints"].get("heldout")
        if expected and split.fingerprint != expected:
            raise SearchError(
                f"{row['task']}: held-out data differs from the study's (fingerprint {split.fingerprint[:12]} "
                f"vs {expected[:12]}); pass the study's --data"
            )
        self.model, tokenizer = load_seq2seq(self.target_dir)
        self.scorer = Scorer(
            self.model,
            tokenizer,
            split,
            mode=settings.get("mode", "rank"),
            order_seed=settings.get("order_seed", 0),
            max_input_length=settings.get("max_input_length", 512),
        )
        self._composers: dict[tuple, Any] = {}

    def score(self, row: dict[str, Any]):
        from search.resolve import candidate_dirs, load_vectors
        from search.taskvector import Composer

        key = (tuple((i["repo_id"], i["revision"]) for i in row["ingredients"]), row["method"])
        composer = self._composers.get(key)
        if composer is None:
            dirs = candidate_dirs(row["ingredients"], db_url=self.db_url)
            vectors = load_vectors(
                base_dir=self.base_dir,
                base_revision=row["base_revision"],
                candidates=[(d, i["revision"]) for d, i in zip(dirs, row["ingredients"], strict=True)],
                cache_dir=None,
            )
            composer = Composer(
                self.model,
                target=self.target_dir,
                vectors=vectors,
                method=row["method"],
                method_options=dict(row["method_options"]) or None,
            )
            self._composers = {key: composer}  # one at a time: each holds a copy of the target
        composer.apply([float(i["coefficient"]) for i in row["ingredients"]])
        return self.scorer.score()


def _score_with_live(live, row: dict[str, Any]):
    composer, scorer, repos = live
    coefs = dict.fromkeys(repos, 0.0)
    for ing in row["ingredients"]:
        if ing["repo_id"] not in coefs:
            return None
        coefs[ing["repo_id"]] = float(ing["coefficient"])
    composer.apply([coefs[r] for r in repos])
    return scorer.score()


def refresh_heldout(
    *,
    db_url: str | None = None,
    study: str | None = None,
    task: str | None = None,
    top_n: int = 3,
    data_dir: Path | None = None,
    live: tuple | None = None,
) -> int:
    """Score the top-N rows (by search score) of each study on the held-out split where missing.

    Args:
        db_url: taskvec database URL.
        study: only this study (default: every study).
        task: only this task.
        top_n: rows per study.
        data_dir: GLUE folder (default: the one recorded in the rows' scorer settings).
        live: `(composer, heldout_scorer, repos)` of a running search, reused instead of reloading.

    Returns:
        The number of rows given a held-out score.

    Raises:
        SearchError: if the held-out data differs from the study's, or an ingredient left the registry.
    """
    from registry.db import session_scope

    rows = query(db_url=db_url, study=study, task=task)
    per_study: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        per_study.setdefault(row["study"], []).append(row)
    n = 0
    for study_rows in per_study.values():
        todo = [r for r in study_rows[:top_n] if r["score_heldout"] is None]
        rebuilder = None
        for row in todo:
            result = _score_with_live(live, row) if live is not None else None
            if result is None:
                rebuilder = rebuilder or _Rebuilder(row, data_dir=data_dir, db_url=db_url)
                result = rebuilder.score(row)
            with session_scope(db_url) as session:
                db_row = session.execute(
                    select(LeaderboardRow).where(
                        LeaderboardRow.study == row["study"],
                        LeaderboardRow.trial_number == row["trial_number"],
                    )
                ).scalar_one()
                db_row.score_heldout = float(result.score)
                db_row.metrics = {
                    **db_row.metrics,
                    "heldout": {k: float(v) for k, v in result.metrics.items()},
                }
                scores = {k: dict(v) for k, v in db_row.scores.items()}
                scores.setdefault(row["task"], {})["heldout"] = float(result.score)
                db_row.scores = scores
                db_row.heldout_at = utcnow()
            n += 1
    return n


# --- export of a row ------------------------------------------------------------------------------------


def get_row(*, study: str, trial: int | None = None, db_url: str | None = None) -> dict[str, Any]:
    """Trial `trial` of `study`, or its best by search score.

    Raises:
        SearchError: if the study has no such row.
    """
    rows = query(db_url=db_url, study=study)
    if not rows:
        raise SearchError(f"study {study!r} has no completed trial on the leaderboard")
    if trial is None:
        return rows[0]
    for row in rows:
        if row["trial_number"] == trial:
            return row
    raise SearchError(f"study {study!r} has no completed trial {trial} on the leaderboard")


def recipe_for(row: dict[str, Any]):
    """The export module's `Recipe` that rebuilds a row's composition."""
    from search.export import Recipe

    return Recipe.model_validate(
        {
            "base": {"repo_id": row["base_repo"], "revision": row["base_revision"]},
            "target": {"repo_id": row["target_repo"], "revision": row["target_revision"]},
            "ingredients": [
                {"repo_id": i["repo_id"], "revision": i["revision"], "coefficient": i["coefficient"]}
                for i in row["ingredients"]
            ],
            "method": row["method"],
            "method_options": row["method_options"] or {},
        }
    )


def export_trial(*, study: str, trial: int | None = None, out: Path, db_url: str | None = None) -> Path:
    """Rebuild a leaderboard composition (trial `trial`, or the study's best) and export it.

    Args:
        study: the study.
        trial: trial number (default: the best by search score).
        out: folder for the merged model, `recipe.yaml` and mergekit YAML.
        db_url: taskvec database URL.

    Returns:
        The exported folder.

    Raises:
        SearchError: no such row, or an ingredient that left the registry.
    """
    row = get_row(study=study, trial=trial, db_url=db_url)
    from search.export import export_merged

    return export_merged(recipe=recipe_for(row), out=Path(out), db_url=db_url)
