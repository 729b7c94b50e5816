"""Held-out scores for finished leaderboard rows, rebuilt from what each row stores (`leaderboard --refresh`).

A running search scores its own top rows with its live model (`search.study`); this path serves rows with
no live model behind them: it loads the row's target, recomposes each row from the registry's pinned
checkpoints and scores it on the held-out splits with the row's own scorer settings (invariant 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from registry.pins import Pinned, base_dir, checkpoint_dirs
from search.errors import SearchError
from search.scoring.device import resolve_device, resolve_dtype
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer, ScoreResult
from search.scoring.settings import ScorerSettings
from search.study.heldout import heldout_objective, row_tasks
from search.study.records import query, write_heldout
from search.tasks.data import load_split
from search.vectors.cache import cached_pairs
from search.vectors.compose import open_composer


def _expected_fingerprint(row: dict[str, Any], task: str, split: str) -> str | None:
    """The fingerprint a row recorded for `task`'s `split` (single-task rows record it at the top)."""
    fps = row["split_fingerprints"] or {}
    for group in ("tasks", "controls"):
        per = (fps.get(group) or {}).get(task)
        if per:
            return per.get(split)
    return fps.get(split) if task == row["task"] else None


class _Rebuilder:
    """Loads one target once and recomposes any of its leaderboard rows on the held-out splits."""

    def __init__(
        self,
        row: dict[str, Any],
        *,
        data_dir: Path | None,
        db_url: str | None,
        cache_dir: Path | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.db_url = db_url
        self.cache_dir = cache_dir
        self.row = row
        self.target_dir = checkpoint_dirs([(row["target_repo"], row["target_revision"])], db_url=db_url)[0]
        self.base = Pinned(
            repo_id=row["base_repo"],
            revision=row["base_revision"],
            path=base_dir(repo_id=row["base_repo"], revision=row["base_revision"], db_url=db_url),
        )
        self.settings = ScorerSettings.from_dict(
            row["scorer"], where=f"study {row['study']!r} trial {row['trial_number']}"
        )
        self.data_dir = data_dir if data_dir is not None else self.settings.data_dir
        where = device if device is not None else resolve_device(None)
        # The row's own precision (invariant 1), on the device asked for: a row it cannot run on fails here.
        resolve_dtype(self.settings.dtype_name, device=where)
        self.model, self.tokenizer = load_seq2seq(self.target_dir, device=where)
        self.scorers: dict[str, Scorer] = {}
        self._composers: dict[tuple, Any] = {}
        self._target: dict[str, ScoreResult] = {}

    def scorer(self, task: str) -> Scorer:
        if task not in self.scorers:
            split = load_split(
                task,
                split="heldout",
                data_dir=self.data_dir,
                seed=self.settings.split_seed,
                source=self.settings.search_from,  # validation's other half for --search-from validation
            )
            expected = _expected_fingerprint(self.row, task, "heldout")
            if expected and split.fingerprint != expected:
                raise SearchError(
                    f"{task}: held-out data differs from the study's (fingerprint {split.fingerprint[:12]} "
                    f"vs {expected[:12]}); pass the study's --data"
                )
            self.scorers[task] = Scorer.from_settings(self.model, self.tokenizer, split, self.settings)
        return self.scorers[task]

    def target(self, tasks: list[str]) -> dict[str, ScoreResult]:
        """The target's own held-out results on `tasks`, scored before any composition touches the model."""
        missing = [t for t in tasks if t not in self._target]
        if missing and self._composers:
            # The live model holds a composition: all coefficients 0 is the target again.
            composer = next(iter(self._composers.values()))
            composer.apply([0.0] * composer.k)
        for t in missing:
            self._target[t] = self.scorer(t).score()
        return {t: self._target[t] for t in tasks}

    def score(self, row: dict[str, Any]) -> dict[str, ScoreResult]:
        key = (tuple((i["repo_id"], i["revision"]) for i in row["ingredients"]), row["method"])
        composer = self._composers.get(key)
        if composer is None:
            pairs = [(i["repo_id"], i["revision"]) for i in row["ingredients"]]
            cached = cached_pairs(pairs, base_revision=self.base.revision, cache_dir=self.cache_dir)
            dirs = checkpoint_dirs(pairs, db_url=self.db_url, unlocated=cached)
            composer = open_composer(
                self.model,
                target=self.target_dir,
                base=self.base,
                ingredients=[Pinned(r, v, d) for (r, v), d in zip(pairs, dirs, strict=True)],
                method=row["method"],
                method_options=row["method_options"],
                cache_dir=self.cache_dir,
            )
            self._composers = {key: composer}  # one at a time: each holds a copy of the target
        composer.apply([float(i["coefficient"]) for i in row["ingredients"]])
        tasks, controls = row_tasks(row)
        return {task: self.scorer(task).score() for task in (*tasks, *controls)}


def refresh_heldout(
    *,
    db_url: str | None = None,
    study: str | None = None,
    task: str | None = None,
    top_n: int = 3,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    device: str | None = None,
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
        cache_dir: the task-vector cache (default: `registry.constants.vector_cache_dir()`).
        device: where to score: `auto`, `cpu`, `cuda`, `cuda:N`, `mps` (None: `TASKVEC_DEVICE`, else auto);
            each row is scored in its own stored precision (its `autocast`).

    Returns:
        The number of rows given a held-out score.

    Raises:
        SearchError: if the held-out data differs from the study's, a row's scorer settings are incomplete,
            or an ingredient left the registry.
    """
    where = resolve_device(device)  # an unusable --device fails even when no row needs scoring
    per_study: dict[str, list[dict[str, Any]]] = {}
    for row in query(db_url=db_url, study=study, task=task, feasible_only=True):
        per_study.setdefault(row["study"], []).append(row)
    n = 0
    for study_rows in per_study.values():
        rebuilder = None  # loaded on the first row that needs it: a study already scored loads nothing
        for row in (r for r in study_rows[:top_n] if r["score_heldout"] is None):
            rebuilder = rebuilder or _Rebuilder(
                row, data_dir=data_dir, db_url=db_url, cache_dir=cache_dir, device=where
            )
            target = rebuilder.target(row_tasks(row)[0])
            results = rebuilder.score(row)
            objective = heldout_objective(row, results)
            write_heldout(row, results, objective=objective, db_url=db_url, target=target)
            n += 1
    return n
