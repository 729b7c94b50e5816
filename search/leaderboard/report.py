"""A study's report: PNG plots and one `index.html` a user opens in the morning.

Three plots (drawn in `search.leaderboard.plots`):
- `history.png`: every finished trial's search score by trial number (pruned ones at the score of the
  prefix where they stopped), the running best, the target.
- `importance.png`: how much each candidate's effective coefficient (0 when left out) matters: Optuna's
  fANOVA (seeded) when the study has enough completed trials, else Spearman's rho with the score (signed),
  labelled as such (a small study cannot support fANOVA), with the number of trials either rests on.
- `coefficients.png`: per candidate, its coefficient in each completed trial against that trial's score
  (read from the leaderboard's ingredients, so it does not depend on how the study names parameters).

A multi-task study plots its objective (a Pareto study: the mean of its tasks), and a Pareto study adds
`pareto.png`: every pair of tasks as a 2-D projection of the leaderboard's rows, the front highlighted.
A surrogate-assisted study adds `surrogate.png`: each trial's surrogate prediction against its exact score,
Spearman's rho in the title.
Trials that failed a control guard are drawn apart and never count as the best.

The HTML page (`search.leaderboard.page`) names every score's metric and split, counts completed and pruned
trials, embeds the plots with captions, and lists the baselines and the leaderboard's top rows with their
held-out gains and intervals, and the `optuna-dashboard` command for the study's storage.
Every file is written to a temporary name and renamed, so an interrupted report never leaves a half file.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from registry.db import redact_url
from search.errors import SearchError
from search.leaderboard.page import PageFacts, baselines_html, html_page
from search.leaderboard.plots import (
    coefficients_figure,
    history_figure,
    importance_figure,
    pareto_figure,
    save_figure,
    surrogate_figure,
)
from search.study import (
    STUDY_ATTR,
    coefficients_from_params,
    default_storage,
    load_baselines,
    trial_feasible,
    trial_value,
)
from search.study.records import query
from search.tasks.naming import OBJECTIVE_LABELS, metric_footnote, score_footnote, search_from_of, task_label

# fANOVA fits a random forest on the trials: below this many it mostly reports noise.
MIN_TRIALS_FOR_FANOVA = 8
PLOT_FILES = ("history.png", "importance.png", "coefficients.png")


@dataclass(frozen=True)
class Importance:
    """Parameter importances and the method that produced them.

    Attributes:
        values: parameter name -> importance, most important first: fANOVA's (non-negative), or
            Spearman's rho with the score (signed; ordered by its magnitude).
        method: "fanova" or "spearman" (the fallback for small studies).
        rho: parameter name -> Spearman's rho with the score (the sign says which way it pushes).
        n_trials: the completed trials both rest on.
    """

    values: dict[str, float]
    method: str
    rho: dict[str, float] = field(default_factory=dict)
    n_trials: int = 0

    @property
    def description(self) -> str:
        """How the values were computed, as the page says it."""
        if self.method == "fanova":
            return f"Optuna's fANOVA (seeded) over {self.n_trials} completed trials"
        return (
            f"Spearman's rho of each coefficient with the score over {self.n_trials} completed trials "
            f"(fANOVA needs at least {MIN_TRIALS_FOR_FANOVA})"
        )


def load_study(*, study: str, storage: str | None) -> optuna.Study:
    """Open an existing study by name.

    Args:
        study: the study name.
        storage: Optuna storage URL; None for taskvec's default.

    Returns:
        The loaded study.

    Raises:
        SearchError: the storage cannot be reached or holds no study of that name.
    """
    url = storage or default_storage()
    try:
        names = optuna.study.get_all_study_names(storage=url)
    except Exception as exc:  # any driver error: the user needs the URL and the reason, not a traceback
        raise SearchError(
            f"cannot open Optuna storage {redact_url(url)}: {type(exc).__name__}: {exc}"
        ) from exc
    if study not in names:
        known = ", ".join(sorted(names)[:10]) or "none"
        raise SearchError(f"no study named {study!r} in {redact_url(url)} (studies there: {known})")
    return optuna.load_study(study_name=study, storage=url)


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's completed trials with finite values, in trial-number order."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(
        (t for t in trials if t.values and all(math.isfinite(v) for v in t.values)), key=lambda t: t.number
    )


def coefficient_table(
    study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial]
) -> dict[str, list[float]]:
    """Each candidate's effective coefficient in each trial (0 when the candidate was left out).

    A taskvec study names its parameters `use:<repo>` and `lambda:<repo>` (the lambda exists only when
    the candidate is used), so Optuna's own importance would see only the inclusion flags; the effective
    coefficient is what the composition used. A study without taskvec's context falls back to its numeric
    parameters, an absent one counting 0.

    Returns:
        name -> one value per trial, in the order of `trials`.
    """
    meta = study.user_attrs.get(STUDY_ATTR) or {}
    repos = [c["repo_id"] for c in meta.get("candidates") or []]
    if repos:
        rows = [coefficients_from_params(t.params, repos) for t in trials]
        return {repo: [row[i] for row in rows] for i, repo in enumerate(repos)}
    names = sorted({n for t in trials for n, v in t.params.items() if isinstance(v, int | float | bool)})
    return {n: [float(t.params.get(n, 0.0)) for t in trials] for n in names}


def param_importances(study: optuna.Study) -> Importance:
    """Importance of each candidate's coefficient (or each numeric parameter) for the score.

    fANOVA (seeded) over the effective coefficients when there are enough completed trials, else
    Spearman's rho between each coefficient and the score; rho (signed) either way.

    Args:
        study: a single-objective study.

    Returns:
        An `Importance`, most important first; empty values when nothing varies.
    """
    trials = completed_trials(study)
    table = {n: v for n, v in coefficient_table(study, trials).items() if len(set(v)) > 1}
    values = [trial_value(t) for t in trials]
    rho = _spearman(table, values)
    if len(trials) >= MIN_TRIALS_FOR_FANOVA and table and len(set(values)) > 1:
        fanova = _fanova(table, values, direction=study.directions[0])
        if fanova:
            return Importance(values=fanova, method="fanova", rho=rho, n_trials=len(trials))
    return Importance(values=rho, method="spearman", rho=rho, n_trials=len(trials))


def _fanova(
    table: dict[str, list[float]], values: list[float], *, direction: optuna.study.StudyDirection
) -> dict[str, float]:
    """fANOVA importances of the table's columns, through a throwaway in-memory study."""
    dists = {n: FloatDistribution(min(v), max(v)) for n, v in table.items()}
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" on stderr
    try:
        shadow = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(level)
    shadow.add_trials(
        optuna.trial.create_trial(params={n: table[n][i] for n in table}, distributions=dists, value=value)
        for i, value in enumerate(values)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = optuna.importance.get_param_importances(
                shadow, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
    except (ValueError, RuntimeError):  # degenerate inputs: the caller falls back to Spearman
        return {}
    if not out or not all(math.isfinite(v) for v in out.values()):
        return {}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _spearman(table: dict[str, list[float]], values: list[float]) -> dict[str, float]:
    """Spearman's rho of each column with the values, largest magnitude first (columns or values without
    variation are left out)."""
    if len(values) < 3:
        return {}
    y = _ranks(np.array(values, dtype=float))
    if np.std(y) == 0:
        return {}
    out: dict[str, float] = {}
    for name, column in table.items():
        x = _ranks(np.array(column, dtype=float))
        if np.std(x) == 0:
            continue
        out[name] = float(np.corrcoef(x, y)[0, 1])
    return dict(sorted(out.items(), key=lambda kv: -abs(kv[1])))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's correlation needs."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(len(values), dtype=float)
    for v in np.unique(values):
        mask = values == v
        ranks[mask] = ranks[mask].mean()
    return ranks


def write_report(*, study: str, storage: str | None, db_url: str | None, out: Path) -> Path:
    """Write the study's plots and `index.html` into `out`.

    Args:
        study: the Optuna study name (also the leaderboard's `study` column).
        storage: Optuna storage URL; None for taskvec's default.
        db_url: taskvec database URL holding the leaderboard; None for the default.
        out: folder to write into (created; existing report files are replaced).

    Returns:
        The path of `index.html`.

    Raises:
        SearchError: the study does not exist, or has no completed trial to report on.
    """
    loaded = load_study(study=study, storage=storage)
    trials = completed_trials(loaded)
    if not trials:
        raise SearchError(f"study {study!r} has no completed trial yet: nothing to report")
    rows = query(db_url=db_url, study=study)
    out.mkdir(parents=True, exist_ok=True)

    importance = param_importances(loaded)
    facts = _facts(loaded, trials=trials, rows=rows, importance=importance, storage=storage)
    label = _score_label(rows, task=facts.task)
    target = facts.target[0]
    pruned = loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    maximize = loaded.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    save_figure(
        history_figure(
            trials,
            pruned=pruned,
            study=study,
            target_search=target,
            maximize=maximize,
            score_label=label,
            target_label=facts.target_label,
        ),
        out / "history.png",
    )
    save_figure(
        importance_figure(
            importance.values,
            method=importance.method,
            study=study,
            n_trials=importance.n_trials,
            rho=importance.rho,
        ),
        out / "importance.png",
    )
    save_figure(
        coefficients_figure(
            rows, study=study, target_search=target, score_label=label, target_label=facts.target_label
        ),
        out / "coefficients.png",
    )
    plots = list(PLOT_FILES)
    if len(loaded.directions) > 1:
        save_figure(pareto_figure(rows, study=study), out / "pareto.png")
        plots.append("pareto.png")
    predicted = [r for r in rows if r.get("surrogate_score") is not None]
    if predicted:  # a surrogate-assisted study: how well its predictions ranked the exact scores
        rho = _spearman(
            {"s": [r["surrogate_score"] for r in predicted]}, [r["score_search"] for r in predicted]
        ).get("s")
        save_figure(surrogate_figure(rows, study=study, rho=rho), out / "surrogate.png")
        plots.append("surrogate.png")
    page = html_page(
        facts=facts,
        rows=rows,
        baselines=baselines_html(load_baselines(study=study, db_url=db_url)),
        plots=plots,
    )
    index = out / "index.html"
    _atomic_write_bytes(index, page.encode("utf-8"))
    return index


def _facts(
    study: optuna.Study,
    *,
    trials: Sequence[optuna.trial.FrozenTrial],
    rows: Sequence[dict[str, Any]],
    importance: Importance,
    storage: str | None,
) -> PageFacts:
    """What the page says about the study besides its rows."""
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ok = [t for t in trials if trial_feasible(t)] or list(trials)
    best = (max if maximize else min)(ok, key=trial_value)
    task = next((str(r["task"]) for r in rows if r.get("task")), "")
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    counts["infeasible"] = sum(not trial_feasible(t) for t in trials)
    url = storage or default_storage()
    shown = redact_url(url)
    return PageFacts(
        study=study.study_name,
        task=task,
        footnote=score_footnote(
            [r["task"] for r in rows] or [task],
            search_from=[search_from_of(r) for r in rows] or ["train"],
            objectives=[str(r.get("objective") or "score") for r in rows],
        ),
        counts=counts,
        best_number=best.number,
        best_search=trial_value(best),
        target=_target_scores(rows),
        target_label="base alone" if "," in task else "target",
        importance_method=importance.description,
        n_importance=importance.n_trials,
        storage=shown,
        password_hidden=shown != url,
    )


def _score_label(rows: Sequence[dict[str, Any]], *, task: str) -> str:
    """The y axis of the score plots: `SST-2: accuracy ×100, search split` (several tasks: the objective)."""
    objective = next((str(r.get("objective")) for r in rows if r.get("objective")), "score")
    if "," in task or objective in OBJECTIVE_LABELS:
        names = ", ".join(task_label(t) for t in task.split(","))
        return f"{objective} of {names} (search split)"
    return f"{metric_footnote([task])}, search split"


def _target_scores(rows: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(target search score, target held-out score) from the leaderboard, when known."""
    search = next(
        (r.get("target_score_search") for r in rows if r.get("target_score_search") is not None), None
    )
    heldout = next(
        (r.get("target_score_heldout") for r in rows if r.get("target_score_heldout") is not None), None
    )
    return search, heldout


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
