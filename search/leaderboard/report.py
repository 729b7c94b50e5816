"""A study's report: PNG plots and one `index.html` a user opens in the morning.

Three plots (drawn in `search.leaderboard.plots`):
- `history.png`: every completed trial's search score by trial number, the running best, the target.
- `importance.png`: how much each candidate's effective coefficient (0 when left out) matters: Optuna's
  fANOVA (seeded) when the study has enough completed trials, else |Spearman correlation| with the score,
  labelled as such (a small study cannot support fANOVA).
- `coefficients.png`: per candidate, its coefficient in each completed trial against that trial's score
  (read from the leaderboard's ingredients, so it does not depend on how the study names parameters).

A multi-task study plots its objective (a Pareto study: the mean of its tasks), and a Pareto study adds
`pareto.png`: every pair of tasks as a 2-D projection of the leaderboard's rows, the front highlighted.
Trials that failed a control guard are drawn apart and never count as the best.

The HTML page embeds the plots and lists the leaderboard's top rows, search and held-out scores beside.
Every file is written to a temporary name and renamed, so an interrupted report never leaves a half file.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from registry.db import redact_url
from search.errors import SearchError
from search.leaderboard.plots import (
    coefficients_figure,
    history_figure,
    importance_figure,
    pareto_figure,
    save_figure,
)
from search.scoring.bootstrap import verdict
from search.study import (
    STUDY_ATTR,
    Baselines,
    coefficients_from_params,
    default_storage,
    load_baselines,
    trial_feasible,
    trial_value,
)
from search.study.records import query

# fANOVA fits a random forest on the trials: below this many it mostly reports noise.
MIN_TRIALS_FOR_FANOVA = 8
TOP_ROWS_IN_HTML = 20
PLOT_FILES = ("history.png", "importance.png", "coefficients.png")


@dataclass(frozen=True)
class Importance:
    """Parameter importances and the method that produced them.

    Attributes:
        values: parameter name -> importance (non-negative), most important first.
        method: "fanova" or "spearman" (the fallback for small or conditional studies).
    """

    values: dict[str, float]
    method: str


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
    |Spearman rho| between each coefficient and the score.

    Args:
        study: a single-objective study.

    Returns:
        An `Importance`, most important first; empty values when nothing varies.
    """
    trials = completed_trials(study)
    table = {n: v for n, v in coefficient_table(study, trials).items() if len(set(v)) > 1}
    values = [trial_value(t) for t in trials]
    if len(trials) >= MIN_TRIALS_FOR_FANOVA and table and len(set(values)) > 1:
        fanova = _fanova(table, values, direction=study.directions[0])
        if fanova:
            return Importance(values=fanova, method="fanova")
    return Importance(values=_spearman_importances(table, values), method="spearman")


def _fanova(
    table: dict[str, list[float]], values: list[float], *, direction: optuna.study.StudyDirection
) -> dict[str, float]:
    """fANOVA importances of the table's columns, through a throwaway in-memory study."""
    dists = {n: FloatDistribution(min(v), max(v)) for n, v in table.items()}
    shadow = optuna.create_study(direction=direction)
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


def _spearman_importances(table: dict[str, list[float]], values: list[float]) -> dict[str, float]:
    """|Spearman rho| of each column with the values (columns or values without variation are left out)."""
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
        out[name] = float(abs(np.corrcoef(x, y)[0, 1]))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


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
    target = _target_scores(rows)
    maximize = loaded.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    save_figure(
        history_figure(trials, study=study, target_search=target[0], maximize=maximize),
        out / "history.png",
    )
    save_figure(
        importance_figure(importance.values, method=importance.method, study=study), out / "importance.png"
    )
    save_figure(coefficients_figure(rows, study=study, target_search=target[0]), out / "coefficients.png")
    plots = list(PLOT_FILES)
    if len(loaded.directions) > 1:
        save_figure(pareto_figure(rows, study=study), out / "pareto.png")
        plots.append("pareto.png")

    page = _html_page(
        baselines=_baselines_html(load_baselines(study=study, db_url=db_url)),
        study=study,
        trials=trials,
        rows=rows,
        importance=importance,
        target=target,
        maximize=maximize,
        plots=plots,
    )
    index = out / "index.html"
    _atomic_write_bytes(index, page.encode("utf-8"))
    return index


def _target_scores(rows: Sequence[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(target search score, target held-out score) from the leaderboard, when known."""
    search = next(
        (r.get("target_score_search") for r in rows if r.get("target_score_search") is not None), None
    )
    heldout = next(
        (r.get("target_score_heldout") for r in rows if r.get("target_score_heldout") is not None), None
    )
    return search, heldout


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _gain_cell(row: dict[str, Any] | None) -> str:
    """A row's held-out gain over the target with its paired bootstrap interval and what it says."""
    if row is None or row.get("gain_heldout") is None:
        return "—"
    ci = row.get("gain_ci")
    if not ci:
        return f"{row['gain_heldout']:+.2f}"
    return f"{row['gain_heldout']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}] ({verdict(ci)})"


def _baselines_html(baselines: Baselines | None) -> str:
    """The study's baselines beside its best, both splits, with the held-out gain's interval."""
    if baselines is None:
        return "<p>No baselines stored yet (a search stores them when its study finishes).</p>"
    esc = html.escape
    target = baselines.rows[0].objective_heldout
    cells = []
    for b in baselines.rows:
        name = "base alone" if b.name == "target" and len(baselines.tasks) > 1 else b.name
        vectors = "<br>".join(f"{esc(r)} × {c:.3f}" for r, c in b.coefficients.items()) or "(none)"
        ci = b.gain_ci or {}
        gain = b.objective_heldout - target
        cell = f"{gain:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]" if ci else f"{gain:+.2f}"
        trial = "" if b.trial is None else f" (trial {b.trial})"
        cells.append(
            f"<tr><td>{esc(name)}{trial}</td><td>{_fmt(b.objective_search)}</td>"
            f"<td>{_fmt(b.objective_heldout)}</td><td>{cell}</td><td>{vectors}</td></tr>"
        )
    versus = baselines.best_vs_single_ci
    note = (
        ""
        if not versus
        else f"<p>Search's best minus the best single, held-out: {versus['gain']:+.2f} "
        f"[{versus['lo']:+.2f}, {versus['hi']:+.2f}] ({esc(str(verdict(versus)))}).</p>"
    )
    return (
        f"<h2>Baselines ({esc(baselines.objective)}; every choice made on the search split)</h2>"
        "<table><thead><tr><th>baseline</th><th>search</th><th>held-out</th>"
        "<th>held-out gain over the target [95% CI]</th><th>vectors × λ</th></tr></thead><tbody>"
        + "\n".join(cells)
        + f"</tbody></table>{note}"
    )


def _html_page(
    *,
    baselines: str,
    study: str,
    trials: Sequence[optuna.trial.FrozenTrial],
    rows: Sequence[dict[str, Any]],
    importance: Importance,
    target: tuple[float | None, float | None],
    maximize: bool,
    plots: Sequence[str] = PLOT_FILES,
) -> str:
    esc = html.escape
    ok = [t for t in trials if trial_feasible(t)] or list(trials)
    best = (max if maximize else min)(ok, key=trial_value)
    task = next((r.get("task") for r in rows if r.get("task")), "")
    top = rows[:TOP_ROWS_IN_HTML]
    body_rows = []
    for r in top:
        ings = "<br>".join(
            f"{esc(i['repo_id'])}@{esc(str(i['revision'])[:10])} × {float(i['coefficient']):.3f}"
            for i in r.get("ingredients") or []
        )
        body_rows.append(
            "<tr>"
            f"<td>{r.get('trial_number')}</td>"
            f"<td>{_fmt(r.get('score_search'))}</td>"
            f"<td>{_fmt(r.get('score_heldout'))}</td>"
            f"<td>{esc(_gain_cell(r))}</td>"
            f"<td>{esc(str(r.get('method', '')))}</td>"
            f"<td>{ings or '(target alone)'}</td>"
            f"<td>{esc(str(r.get('worker', '')))}</td>"
            "</tr>"
        )
    gain = f"{trial_value(best) - target[0]:+.2f}" if target[0] is not None else "—"
    best_row = next((r for r in rows if r.get("trial_number") == best.number), None)
    imgs = "\n".join(
        f'<figure><img src="{name}" alt="{name}"><figcaption>{name}</figcaption></figure>' for name in plots
    )
    table = (
        "<table><thead><tr><th>trial</th><th>search</th><th>held-out</th>"
        "<th>held-out gain [95% CI]</th><th>method</th>"
        "<th>ingredients (repo@revision × coefficient)</th><th>worker</th></tr></thead><tbody>"
        + "\n".join(body_rows)
        + "</tbody></table>"
        if body_rows
        else "<p>No leaderboard rows for this study.</p>"
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>taskvec report: {esc(study)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }} code {{ background: #f4f4f4; }}
</style></head><body>
<h1>taskvec report: {esc(study)}</h1>
<p>Task <b>{esc(str(task))}</b>; {len(trials)} completed trials; generated {generated}.</p>
<table>
<tr><th></th><th>search split</th><th>held-out split</th></tr>
<tr><td>target</td><td>{_fmt(target[0])}</td><td>{_fmt(target[1])}</td></tr>
<tr><td>best trial (#{best.number})</td><td>{_fmt(trial_value(best))}</td>
<td>{_fmt(None if best_row is None else best_row.get("score_heldout"))}</td></tr>
<tr><td>gain over the target [paired bootstrap 95% CI]</td><td>{gain}</td><td>{esc(_gain_cell(best_row))}</td></tr>
</table>
<p>Selection used only the search split; held-out scores are reported for the top trials, never used to choose.
Importance method: {esc(importance.method)}.</p>
{baselines}
{imgs}
<h2>Leaderboard (top {len(top)})</h2>
{table}
<p>Interactive view: <code>optuna-dashboard &lt;storage URL&gt;</code>, then open study <code>{esc(study)}</code>.</p>
</body></html>
"""


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
