"""The leaderboard: one row per completed search trial, and the queries users run in the morning.

Rows are written by the search right after each trial completes (idempotent upsert on (study, trial
number)), so a crash loses at most the trial in flight. The best composition of a task is chosen on the
search split only (invariant 2); held-out scores sit beside it, computed for the top trials after the
search (`refresh_heldout`), never used to rank. A row that failed a control guard (`feasible` false) is
kept with its control scores but never ranks as best; a multi-task row's `task` is its tasks joined by
commas, its `scores` hold every task, and `pareto` marks the non-dominated rows of a Pareto study.
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
    "feasible",
    "reference_scores",
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
# Columns a re-written trial may not clear: held-out results and Pareto flags computed after the trial.
_KEEP_ON_UPDATE = ("score_heldout", "heldout_at", "id", "created", "pareto")


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
    *,
    db_url: str | None = None,
    task: str | None = None,
    study: str | None = None,
    top: int | None = None,
    feasible_only: bool = False,
    pareto_only: bool = False,
) -> list[dict[str, Any]]:
    """Leaderboard rows: feasible before infeasible, then best search score first.

    Args:
        db_url: taskvec database URL.
        task: only this task (a multi-task row's task is its tasks joined by commas).
        study: only this study.
        top: at most this many rows per task.
        feasible_only: leave out rows that failed a control guard.
        pareto_only: only rows on their study's Pareto front.

    Returns:
        Row dicts with `ROW_KEYS`.
    """
    from registry.db import session_scope

    stmt = select(LeaderboardRow)
    if task:
        stmt = stmt.where(LeaderboardRow.task == task)
    if study:
        stmt = stmt.where(LeaderboardRow.study == study)
    if feasible_only:
        stmt = stmt.where(LeaderboardRow.feasible.is_(True))
    if pareto_only:
        stmt = stmt.where(LeaderboardRow.pareto.is_(True))
    stmt = stmt.order_by(
        LeaderboardRow.task,
        LeaderboardRow.feasible.desc(),
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
    """The study's best feasible row by search score (None when it has no feasible completed trial)."""
    rows = query(db_url=db_url, study=study, top=1, feasible_only=True)
    return rows[0] if rows else None


def summary(
    *, db_url: str | None = None, task: str | None = None, study: str | None = None
) -> list[dict[str, Any]]:
    """Per task: the target against the best feasible composition (chosen on the search split) and the gains.

    Returns:
        One dict per task: `task`, `study`, `trial_number`, `target_repo`, `target_score_search`,
        `target_score_heldout`, `best_score_search`, `best_score_heldout`, `gain_search`, `gain_heldout`,
        `ingredients`, `method`, `n_rows`.
    """
    rows = query(db_url=db_url, task=task, study=study, feasible_only=True)
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
            "objective": row["objective"],
            "scores": row["scores"],
        }
    return [{**v, "n_rows": counts[k]} for k, v in out.items()]


def update_pareto(*, study: str, db_url: str | None = None) -> int:
    """Recompute the study's Pareto flags from its rows' per-task search scores (feasible rows only).

    Called after every row a Pareto study writes; concurrent workers may interleave, and each worker's
    last call (at its end) leaves the flags exact.

    Returns:
        The number of rows on the front.
    """
    from registry.db import session_scope
    from search.study.objectives import pareto_mask

    with session_scope(db_url) as session:
        rows = list(session.execute(select(LeaderboardRow).where(LeaderboardRow.study == study)).scalars())
        feasible = [r for r in rows if r.feasible]
        if not feasible:
            return 0
        tasks = sorted(feasible[0].scores)
        mask = pareto_mask([[float(r.scores[t]["search"]) for t in tasks] for r in feasible])
        front = {r.id for r, on in zip(feasible, mask, strict=True) if on}
        for r in rows:
            flag = r.id in front
            if r.pareto != flag:
                r.pareto = flag
        return len(front)


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


def _expected_fingerprint(row: dict[str, Any], task: str, split: str) -> str | None:
    """The fingerprint a row recorded for `task`'s `split` (single-task rows record it at the top)."""
    fps = row["split_fingerprints"] or {}
    for group in ("tasks", "controls"):
        per = (fps.get(group) or {}).get(task)
        if per:
            return per.get(split)
    return fps.get(split) if task == row["task"] else None


def _row_tasks(row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(objective tasks, control tasks) of a row."""
    return list(row["scores"] or {row["task"]: {}}), list(row["constraints"] or {})


class _Rebuilder:
    """Loads one target once and recomposes any of its leaderboard rows on the held-out splits."""

    def __init__(self, row: dict[str, Any], *, data_dir: Path | None, db_url: str | None) -> None:
        from search.scoring.models import load_seq2seq
        from search.vectors.resolve import base_dir_of, candidate_dirs

        self.db_url = db_url
        self.row = row
        target = {"repo_id": row["target_repo"], "revision": row["target_revision"]}
        self.target_dir = candidate_dirs([target], db_url=db_url)[0]
        self.base_dir = base_dir_of(repo_id=row["base_repo"], revision=row["base_revision"], db_url=db_url)
        self.settings = row["scorer"]
        if data_dir is None and self.settings.get("data") not in (None, "hub"):
            data_dir = Path(self.settings["data"])
        self.data_dir = data_dir
        self.model, self.tokenizer = load_seq2seq(self.target_dir)
        self.scorers: dict[str, Any] = {}
        self._composers: dict[tuple, Any] = {}

    def scorer(self, task: str):
        from search.scoring.scorer import Scorer
        from search.tasks.data import load_split

        if task not in self.scorers:
            split = load_split(task, split="heldout", data_dir=self.data_dir)
            expected = _expected_fingerprint(self.row, task, "heldout")
            if expected and split.fingerprint != expected:
                raise SearchError(
                    f"{task}: held-out data differs from the study's (fingerprint {split.fingerprint[:12]} "
                    f"vs {expected[:12]}); pass the study's --data"
                )
            self.scorers[task] = Scorer(
                self.model,
                self.tokenizer,
                split,
                mode=self.settings.get("mode", "rank"),
                order_seed=self.settings.get("order_seed", 0),
                max_input_length=self.settings.get("max_input_length", 512),
            )
        return self.scorers[task]

    def score(self, row: dict[str, Any]) -> dict[str, Any]:
        from search.vectors.resolve import candidate_dirs, load_vectors
        from search.vectors.taskvector import Composer

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
        tasks, controls = _row_tasks(row)
        return {task: self.scorer(task).score() for task in (*tasks, *controls)}


def _score_with_live(live, row: dict[str, Any]) -> dict[str, Any] | None:
    composer, scorers, repos = live
    coefs = dict.fromkeys(repos, 0.0)
    for ing in row["ingredients"]:
        if ing["repo_id"] not in coefs:
            return None
        coefs[ing["repo_id"]] = float(ing["coefficient"])
    tasks, controls = _row_tasks(row)
    if any(t not in scorers for t in (*tasks, *controls)):
        return None
    composer.apply([coefs[r] for r in repos])
    return {task: scorers[task].score() for task in (*tasks, *controls)}


def _heldout_objective(row: dict[str, Any], results: dict[str, Any]) -> float:
    from search.study.objectives import combine

    tasks, _ = _row_tasks(row)
    kind = row["objective"] or "score"
    refs = {t: r.get("score_heldout") for t, r in (row.get("reference_scores") or {}).items()}
    return combine(
        {t: float(results[t].score) for t in tasks},
        kind="mean" if kind == "pareto" else kind,
        references={t: v for t, v in refs.items() if v is not None},
    )


def refresh_heldout(
    *,
    db_url: str | None = None,
    study: str | None = None,
    task: str | None = None,
    top_n: int = 3,
    data_dir: Path | None = None,
    live: tuple | None = None,
) -> int:
    """Score the top-N feasible rows (by search score) of each study on the held-out splits where missing.

    A multi-task row gets every task's held-out score and its objective on them; a guarded row also gets
    its control tasks' held-out scores (reported, never used to choose).

    Args:
        db_url: taskvec database URL.
        study: only this study (default: every study).
        task: only this task.
        top_n: rows per study.
        data_dir: GLUE folder (default: the one recorded in the rows' scorer settings).
        live: `(composer, task -> held-out scorer, repos)` of a running search, reused instead of
            reloading.

    Returns:
        The number of rows given a held-out score.

    Raises:
        SearchError: if the held-out data differs from the study's, or an ingredient left the registry.
    """
    from registry.db import session_scope

    rows = query(db_url=db_url, study=study, task=task, feasible_only=True)
    per_study: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        per_study.setdefault(row["study"], []).append(row)
    n = 0
    for study_rows in per_study.values():
        todo = [r for r in study_rows[:top_n] if r["score_heldout"] is None]
        rebuilder = None
        for row in todo:
            results = _score_with_live(live, row) if live is not None else None
            if results is None:
                rebuilder = rebuilder or _Rebuilder(row, data_dir=data_dir, db_url=db_url)
                results = rebuilder.score(row)
            tasks, controls = _row_tasks(row)
            with session_scope(db_url) as session:
                db_row = session.execute(
                    select(LeaderboardRow).where(
                        LeaderboardRow.study == row["study"],
                        LeaderboardRow.trial_number == row["trial_number"],
                    )
                ).scalar_one()
                db_row.score_heldout = _heldout_objective(row, results)
                if len(tasks) == 1:
                    heldout_metrics: dict[str, Any] = {
                        k: float(v) for k, v in results[tasks[0]].metrics.items()
                    }
                else:
                    heldout_metrics = {t: {k: float(v) for k, v in results[t].metrics.items()} for t in tasks}
                db_row.metrics = {**db_row.metrics, "heldout": heldout_metrics}
                scores = {k: dict(v) for k, v in db_row.scores.items()}
                for t in tasks:
                    scores.setdefault(t, {})["heldout"] = float(results[t].score)
                db_row.scores = scores
                if controls:
                    db_row.constraints = {
                        c: {**v, "score_heldout": float(results[c].score)}
                        for c, v in db_row.constraints.items()
                    }
                db_row.heldout_at = utcnow()
            n += 1
    return n


# --- export of a row ------------------------------------------------------------------------------------


def get_row(*, study: str, trial: int | None = None, db_url: str | None = None) -> dict[str, Any]:
    """Trial `trial` of `study`, or its best feasible row by search score.

    Raises:
        SearchError: if the study has no such row.
    """
    rows = query(db_url=db_url, study=study)
    if not rows:
        raise SearchError(f"study {study!r} has no completed trial on the leaderboard")
    if trial is None:
        if not rows[0]["feasible"]:
            raise SearchError(f"study {study!r}: every trial failed a control guard; name one with --trial")
        return rows[0]
    for row in rows:
        if row["trial_number"] == trial:
            return row
    raise SearchError(f"study {study!r} has no completed trial {trial} on the leaderboard")


def recipe_for(row: dict[str, Any]):
    """The export module's `Recipe` that rebuilds a row's composition."""
    from search.export.folder import Recipe

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
    from search.export.folder import export_merged

    return export_merged(recipe=recipe_for(row), out=Path(out), db_url=db_url)
