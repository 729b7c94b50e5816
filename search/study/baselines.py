"""The obvious alternatives to a search, scored beside its result on both splits.

- `target`: the target alone (every coefficient 0);
- `best-single`: one task: screening's top candidate at its screened lambda; several tasks: the ingredient
  whose vector alone (at its screened lambda, a reference's 1.0) scores best on the search split;
- `add-all`: every ingredient at its own screened lambda;
- `global-lambda`: FusionBench's task arithmetic, one lambda over all ingredients, chosen on the search split;
- `search-best`: the study's best feasible row by search score.

Every choice is made on the search split; held-out is only reported, with a paired bootstrap interval of
each baseline's held-out gain over the target and of the search's best over the best single.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from sqlalchemy import delete, select

from registry.db import session_scope
from search.errors import SearchError
from search.scoring.bootstrap import decode_labels, encode_labels, paired_bootstrap_objective
from search.study.config import SearchConfig
from search.study.live import LiveStudy, open_live
from search.study.objectives import combine
from search.study.records import study_best
from search.tables import BaselineRow

BASELINE_LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BASELINE_NAMES = ("target", "best-single", "add-all", "global-lambda", "search-best")


@dataclass(frozen=True)
class BaselineResult:
    """Task arithmetic with one global lambda over all of a study's ingredients (FusionBench's baseline).

    The lambda is chosen on the search split, as the study's compositions are; held-out is only reported.

    Attributes:
        study: the study whose ingredients were used.
        ingredients: their repo ids.
        lambda_: the chosen global coefficient.
        grid: lambda -> objective on the search split.
        scores: task -> {"search", "heldout"} at the chosen lambda.
        objective_search: the objective at the chosen lambda on the search split.
        objective_heldout: the same objective on the held-out split.
        feasible: whether every control guard held on the search split.
    """

    study: str
    ingredients: tuple[str, ...]
    lambda_: float
    grid: dict[float, float]
    scores: dict[str, dict[str, float]]
    objective_search: float
    objective_heldout: float
    feasible: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Baseline:
    """One alternative scored beside the search.

    Attributes:
        name: one of `BASELINE_NAMES`.
        coefficients: repo id -> lambda of the vectors it adds (empty for the target).
        scores: task -> {"search": score, "heldout": score}.
        objective_search, objective_heldout: the study's objective on each split.
        gain_ci: paired bootstrap 95% interval of the held-out objective's gain over the target
            (`GainInterval.to_dict()`: lo, hi, gain, level, resamples, seed, n).
        trial: the study trial it is (`search-best` only).
        predictions: task -> held-out predicted label ids (what the intervals are computed from).
    """

    name: str
    coefficients: dict[str, float]
    scores: dict[str, dict[str, float]]
    objective_search: float
    objective_heldout: float
    gain_ci: dict[str, Any] | None = None
    trial: int | None = None
    predictions: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("predictions")
        return out


@dataclass(frozen=True)
class Baselines:
    """A study's baselines and the interval that says whether its search beat the best single.

    Attributes:
        study: the study.
        objective: its objective (`score` for one task).
        tasks: its tasks.
        rows: the baselines in `BASELINE_NAMES` order (`search-best` absent without a feasible trial).
        best_vs_single_ci: paired bootstrap 95% interval of search-best minus best-single, held-out
            (as `Baseline.gain_ci`).
    """

    study: str
    objective: str
    tasks: tuple[str, ...]
    rows: tuple[Baseline, ...]
    best_vs_single_ci: dict[str, Any] | None

    def get(self, name: str) -> Baseline | None:
        return next((b for b in self.rows if b.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "objective": self.objective,
            "tasks": list(self.tasks),
            "rows": [b.as_dict() for b in self.rows],
            "best_vs_single_ci": self.best_vs_single_ci,
        }


class _Evaluator:
    """Composes coefficient vectors on the live model and scores them on both splits."""

    def __init__(self, live: LiveStudy, *, kind: str) -> None:
        self.live = live
        self.kind = kind
        self.tasks = tuple(live.context.tasks)
        self.refs = {s: live.context.reference_scores(s) for s in ("search", "heldout")}
        self.labels = {t: live.heldout[t].split.examples["label"].to_numpy() for t in self.tasks}

    def coefs(self, mapping: dict[str, float]) -> list[float]:
        return [float(mapping.get(r, 0.0)) for r in self.live.repos]

    def search(self, mapping: dict[str, float]) -> tuple[dict[str, float], float]:
        self.live.composer.apply(self.coefs(mapping))
        scores = {t: float(self.live.scorers[t].full.score().score) for t in self.tasks}
        return scores, combine(scores, kind=self.kind, references=self.refs["search"])

    def baseline(self, name: str, mapping: dict[str, float], *, trial: int | None = None) -> Baseline:
        search, objective_search = self.search(mapping)
        results = {t: self.live.heldout[t].score() for t in self.tasks}
        heldout = {t: float(r.score) for t, r in results.items()}
        return Baseline(
            name=name,
            coefficients={r: float(v) for r, v in mapping.items() if v},
            scores={t: {"search": search[t], "heldout": heldout[t]} for t in self.tasks},
            objective_search=objective_search,
            objective_heldout=combine(heldout, kind=self.kind, references=self.refs["heldout"]),
            trial=trial,
            predictions={t: self._ordered(r) for t, r in results.items()},
        )

    def _ordered(self, result: Any) -> list[int]:
        """Predictions in the split's row order (the scorer's order is a seeded permutation)."""
        preds = np.empty(len(result.positions), dtype=np.int64)
        preds[np.asarray(result.positions)] = np.asarray(result.predictions)
        return preds.tolist()

    def interval(self, new: Baseline, old: Baseline) -> dict[str, Any]:
        """The paired bootstrap interval of `new`'s held-out objective minus `old`'s (as rows store it)."""
        return paired_bootstrap_objective(
            labels=self.labels,
            preds_a={t: new.predictions[t] for t in self.tasks},
            preds_b={t: old.predictions[t] for t in self.tasks},
            objective=self.kind,
            references=self.refs["heldout"],
        ).to_dict()


def _global_lambda(
    ev: _Evaluator, lambdas: Sequence[float]
) -> tuple[float, dict[float, float], dict[float, tuple[dict[str, float], bool]]]:
    """FusionBench's grid on the search split: `(chosen lambda, lambda -> objective, lambda -> (task scores,
    every control guard held))`; the best among the lambdas passing the guards (all, when none does)."""
    grid: dict[float, float] = {}
    per_lambda: dict[float, tuple[dict[str, float], bool]] = {}
    for lam in lambdas:
        scores, grid[float(lam)] = ev.search(dict.fromkeys(ev.live.repos, float(lam)))
        ok = all(g.violation(float(g.scorer.score().score)) <= 0 for g in ev.live.guards)
        per_lambda[float(lam)] = (scores, ok)
    feasible = [lam for lam in grid if per_lambda[lam][1]] or list(grid)
    return max(feasible, key=lambda lam: (grid[lam], -lam)), grid, per_lambda


def _best_single(ev: _Evaluator, screened: dict[str, float]) -> str:
    candidates = ev.live.context.candidates
    if all(c.role is None for c in candidates):
        return max(candidates, key=lambda c: (c.gain, c.repo_id)).repo_id
    # Several tasks: the single vector that does best on the search split.
    scored = {r: ev.search({r: lam})[1] for r, lam in screened.items()}
    return max(scored, key=lambda r: (scored[r], r))


def study_baselines(config: SearchConfig, *, lambdas: Sequence[float] = BASELINE_LAMBDAS) -> Baselines:
    """Score the obvious alternatives to `config`'s (existing) study on both splits, with intervals.

    Raises:
        SearchError: if the study does not exist or the grid is empty.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    live = open_live(config, create=False)
    return live_baselines(live, kind=config.kind, db_url=config.db_url, lambdas=lambdas)


def live_baselines(
    live: LiveStudy, *, kind: str, db_url: str | None, lambdas: Sequence[float] = BASELINE_LAMBDAS
) -> Baselines:
    """`study_baselines` on a worker's live study (the search's own model: nothing loads again).

    Leaves the live model composed as the last baseline; a trial composes its own coefficients first.
    """
    if not lambdas:
        raise SearchError("the baseline needs at least one lambda")
    kind = "mean" if kind == "pareto" else kind
    ev = _Evaluator(live, kind=kind)
    lambda_max = live.context.lambda_max
    screened = {c.repo_id: float(min(lambda_max, max(0.0, c.best_lambda))) for c in live.context.candidates}
    single = _best_single(ev, screened)
    lam, _, _ = _global_lambda(ev, lambdas)
    rows = [
        ev.baseline("target", {}),
        ev.baseline("best-single", {single: screened[single]}),
        ev.baseline("add-all", screened),
        ev.baseline("global-lambda", dict.fromkeys(live.repos, lam)),
    ]
    best = study_best(study=live.name, db_url=db_url)
    if best is not None:
        mapping = {i["repo_id"]: float(i["coefficient"]) for i in best["ingredients"]}
        rows.append(ev.baseline("search-best", mapping, trial=int(best["trial_number"])))
    target = rows[0]
    rows = [_with_ci(r, ev.interval(r, target)) for r in rows]
    top = next((r for r in rows if r.name == "search-best"), None)
    versus = None if top is None else ev.interval(top, rows[1])
    return Baselines(
        study=live.name, objective=kind, tasks=ev.tasks, rows=tuple(rows), best_vs_single_ci=versus
    )


def _with_ci(row: Baseline, ci: dict[str, Any]) -> Baseline:
    return Baseline(**{**row.__dict__, "gain_ci": ci})


def save_baselines(baselines: Baselines, *, task: str, db_url: str | None) -> None:
    """Store a study's baselines (replacing any it had), with their held-out predictions."""
    with session_scope(db_url) as session:
        session.execute(delete(BaselineRow).where(BaselineRow.study == baselines.study))
        for b in baselines.rows:
            session.add(
                BaselineRow(
                    study=baselines.study,
                    task=task,
                    name=b.name,
                    objective=baselines.objective,
                    coefficients=b.coefficients,
                    scores=b.scores,
                    objective_search=b.objective_search,
                    objective_heldout=b.objective_heldout,
                    gain_ci=b.gain_ci,
                    versus_single_ci=baselines.best_vs_single_ci if b.name == "search-best" else None,
                    trial_number=b.trial,
                    heldout_predictions={t: encode_labels(p) for t, p in b.predictions.items()},
                )
            )


def load_baselines(*, study: str, db_url: str | None) -> Baselines | None:
    """A study's stored baselines, in `BASELINE_NAMES` order (None when it has none)."""
    with session_scope(db_url) as session:
        rows = session.execute(select(BaselineRow).where(BaselineRow.study == study)).scalars().all()
        if not rows:
            return None
        order = {n: i for i, n in enumerate(BASELINE_NAMES)}
        rows = sorted(rows, key=lambda r: order.get(r.name, len(order)))
        tasks = tuple(rows[0].scores)
        versus = next((r.versus_single_ci for r in rows if r.name == "search-best"), None)
        return Baselines(
            study=study,
            objective=rows[0].objective,
            tasks=tasks,
            rows=tuple(
                Baseline(
                    name=r.name,
                    coefficients=dict(r.coefficients),
                    scores=dict(r.scores),
                    objective_search=r.objective_search,
                    objective_heldout=r.objective_heldout,
                    gain_ci=r.gain_ci,
                    trial=r.trial_number,
                    predictions={t: decode_labels(v).tolist() for t, v in r.heldout_predictions.items()},
                )
                for r in rows
            ),
            best_vs_single_ci=versus,
        )


def baseline_studies(*, task: str | None = None, db_url: str | None) -> list[str]:
    """Studies with stored baselines (of one task label, or all), by name."""
    with session_scope(db_url) as session:
        query = select(BaselineRow.study).distinct()
        if task is not None:
            query = query.where(BaselineRow.task == task)
        return sorted(session.execute(query).scalars().all())


def global_lambda_baseline(
    config: SearchConfig, *, lambdas: Sequence[float] = BASELINE_LAMBDAS
) -> BaselineResult:
    """Score `theta_T + lambda * sum_i tau_i` over the study's ingredients for each lambda of a grid.

    Args:
        config: the search whose study exists (same options as the `run_search` that made it).
        lambdas: the grid; the best on the search split (among those passing the guards, if any) is kept.

    Returns:
        The chosen lambda with its per-task search and held-out scores.

    Raises:
        SearchError: if the study does not exist or the grid is empty.
    """
    if not lambdas:
        raise SearchError("the baseline needs at least one lambda")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    live = open_live(config, create=False)
    kind = "mean" if config.kind == "pareto" else config.kind
    best, grid, per_lambda = _global_lambda(_Evaluator(live, kind=kind), lambdas)
    live.composer.apply([best] * len(live.repos))
    heldout = {t: float(live.heldout[t].score().score) for t in config.tasks}
    return BaselineResult(
        study=live.name,
        ingredients=tuple(live.repos),
        lambda_=best,
        grid=grid,
        scores={t: {"search": per_lambda[best][0][t], "heldout": heldout[t]} for t in config.tasks},
        objective_search=grid[best],
        objective_heldout=combine(heldout, kind=kind, references=live.context.reference_scores("heldout")),
        feasible=per_lambda[best][1],
    )
