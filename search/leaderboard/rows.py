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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from registry.pins import Pinned, base_dir, checkpoint_dirs
from search.errors import SearchError
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer
from search.study.records import (
    query,
    write_heldout,
)
from search.tasks.data import load_split
from search.vectors.compose import open_composer

# Keys of a row dict (`taskvec leaderboard --json`), item 3 of the search issue first.
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
        self.db_url = db_url
        self.row = row
        self.target_dir = checkpoint_dirs([(row["target_repo"], row["target_revision"])], db_url=db_url)[0]
        self.base = Pinned(
            repo_id=row["base_repo"],
            revision=row["base_revision"],
            path=base_dir(repo_id=row["base_repo"], revision=row["base_revision"], db_url=db_url),
        )
        self.settings = row["scorer"]
        if data_dir is None and self.settings.get("data") not in (None, "hub"):
            data_dir = Path(self.settings["data"])
        self.data_dir = data_dir
        self.model, self.tokenizer = load_seq2seq(self.target_dir)
        self.scorers: dict[str, Any] = {}
        self._composers: dict[tuple, Any] = {}

    def scorer(self, task: str):
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
        key = (tuple((i["repo_id"], i["revision"]) for i in row["ingredients"]), row["method"])
        composer = self._composers.get(key)
        if composer is None:
            pairs = [(i["repo_id"], i["revision"]) for i in row["ingredients"]]
            dirs = checkpoint_dirs(pairs, db_url=self.db_url)
            composer = open_composer(
                self.model,
                target=self.target_dir,
                base=self.base,
                ingredients=[Pinned(r, v, d) for (r, v), d in zip(pairs, dirs, strict=True)],
                method=row["method"],
                method_options=row["method_options"],
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
            write_heldout(row, results, objective=_heldout_objective(row, results), db_url=db_url)
            n += 1
    return n


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
