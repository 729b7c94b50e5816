"""A study's report: PNG plots and one `index.html` a user opens in the morning.

Three plots, drawn with matplotlib's Agg canvas (no display, no global pyplot state):
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
from matplotlib.figure import Figure

from search.errors import SearchError
from search.study.run import coefficients_from_params, trial_feasible, trial_value

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


def default_storage_url() -> str:
    """The Optuna storage used when none is given: the search module's default, else beside the DB.

    Returns:
        A SQLAlchemy URL for Optuna's RDB storage.
    """
    try:
        from search.study import run as study_mod

        fn = getattr(study_mod, "default_storage", None) or getattr(study_mod, "default_storage_url", None)
        if callable(fn):
            return fn()
    except ImportError:  # the report also works on a study written by another version of taskvec
        pass
    from registry.constants import home

    return f"sqlite:///{home() / 'optuna.db'}"


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
    url = storage or default_storage_url()
    try:
        names = optuna.study.get_all_study_names(storage=url)
    except Exception as exc:  # any driver error: the user needs the URL and the reason, not a traceback
        raise SearchError(
            f"cannot open Optuna storage {_safe_url(url)}: {type(exc).__name__}: {exc}"
        ) from exc
    if study not in names:
        known = ", ".join(sorted(names)[:10]) or "none"
        raise SearchError(f"no study named {study!r} in {_safe_url(url)} (studies there: {known})")
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
    meta = study.user_attrs.get("taskvec") or {}
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
    from optuna.distributions import FloatDistribution

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


def _leaderboard_rows(*, study: str, db_url: str | None) -> list[dict[str, Any]]:
    """The study's leaderboard rows, best first (empty when the leaderboard has none)."""
    from search.study import records as leaderboard

    return leaderboard.query(db_url=db_url, study=study)


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
    rows = _leaderboard_rows(study=study, db_url=db_url)
    out.mkdir(parents=True, exist_ok=True)

    importance = param_importances(loaded)
    target = _target_scores(rows)
    maximize = loaded.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    _save_figure(
        _history_figure(trials, study=study, target_search=target[0], maximize=maximize),
        out / "history.png",
    )
    _save_figure(_importance_figure(importance, study=study), out / "importance.png")
    _save_figure(_coefficients_figure(rows, study=study, target_search=target[0]), out / "coefficients.png")
    plots = list(PLOT_FILES)
    if len(loaded.directions) > 1:
        _save_figure(_pareto_figure(rows, study=study), out / "pareto.png")
        plots.append("pareto.png")

    page = _html_page(
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


def _history_figure(
    trials: Sequence[optuna.trial.FrozenTrial], *, study: str, target_search: float | None, maximize: bool
) -> Figure:
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ok = [t for t in trials if trial_feasible(t)]
    bad = [t for t in trials if not trial_feasible(t)]
    ax.scatter(
        [t.number for t in ok], [trial_value(t) for t in ok], s=14, alpha=0.7, label="trial (search split)"
    )
    if bad:
        ax.scatter(
            [t.number for t in bad],
            [trial_value(t) for t in bad],
            s=18,
            marker="x",
            color="C3",
            label="failed a control guard",
        )
    if ok:
        values = [trial_value(t) for t in ok]
        running = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        ax.step([t.number for t in ok], running, where="post", color="C1", label="best so far")
    if target_search is not None:
        ax.axhline(target_search, color="C2", linestyle="--", label=f"target ({target_search:.1f})")
    ax.set_xlabel("trial number")
    ax.set_ylabel("score on the search split")
    ax.set_title(f"Optimisation history: {study}")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _importance_figure(importance: Importance, *, study: str) -> Figure:
    items = list(importance.values.items())[:20]
    fig = Figure(figsize=(7, max(2.5, 0.35 * len(items) + 1.2)), dpi=100)
    ax = fig.add_subplot()
    label = "fANOVA importance" if importance.method == "fanova" else "|Spearman rho| with the score"
    if items:
        names = [_short(n) for n, _ in items][::-1]
        ax.barh(names, [v for _, v in items][::-1], color="C0")
        ax.set_xlabel(label)
    else:
        ax.text(0.5, 0.5, "too few trials to estimate importance", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"Coefficient importance: {study} ({importance.method})")
    fig.tight_layout()
    return fig


def _coefficients_figure(
    rows: Sequence[dict[str, Any]], *, study: str, target_search: float | None
) -> Figure:
    complete = [r for r in rows if r.get("score_search") is not None]
    repos = sorted({ing["repo_id"] for r in complete for ing in r.get("ingredients") or []})
    n = max(1, len(repos))
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig = Figure(figsize=(4 * cols, 3 * nrows + 0.6), dpi=100)
    if not repos:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no leaderboard rows with ingredients", ha="center", va="center")
        ax.set_axis_off()
        return fig
    for i, repo in enumerate(repos):
        ax = fig.add_subplot(nrows, cols, i + 1)
        coef = [_coefficient(r, repo) for r in complete]
        score = [float(r["score_search"]) for r in complete]
        inc = [c is not None for c in coef]
        ax.scatter(
            [c for c, k in zip(coef, inc, strict=True) if k],
            [s for s, k in zip(score, inc, strict=True) if k],
            s=14,
            color="C0",
            label="included",
        )
        excluded = [s for s, k in zip(score, inc, strict=True) if not k]
        if excluded:
            ax.scatter([0.0] * len(excluded), excluded, s=14, color="0.6", marker="x", label="excluded")
        if target_search is not None:
            ax.axhline(target_search, color="C2", linestyle="--", linewidth=1)
        ax.set_title(_short(repo), fontsize="small")
        ax.set_xlabel("coefficient", fontsize="small")
        ax.set_ylabel("search score", fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Per-candidate coefficient vs score: {study}")
    fig.tight_layout()
    return fig


def _pareto_figure(rows: Sequence[dict[str, Any]], *, study: str) -> Figure:
    """Every pair of tasks as a 2-D projection of the feasible rows' search scores, the front highlighted."""
    feasible = [r for r in rows if r.get("feasible", True) and r.get("scores")]
    tasks = sorted(feasible[0]["scores"]) if feasible else []
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
    cols = min(3, max(1, len(pairs)))
    nrows = max(1, math.ceil(len(pairs) / cols))
    fig = Figure(figsize=(max(6, 4 * cols), 3.6 * nrows + 0.6), dpi=100)
    if not pairs:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "a Pareto front needs at least two tasks", ha="center", va="center")
        ax.set_axis_off()
        return fig
    for k, (a, b) in enumerate(pairs):
        ax = fig.add_subplot(nrows, cols, k + 1)
        for on_front, style in ((False, dict(color="0.6", s=12)), (True, dict(color="C3", s=22))):
            pts = [r for r in feasible if bool(r.get("pareto")) == on_front]
            ax.scatter(
                [r["scores"][a]["search"] for r in pts],
                [r["scores"][b]["search"] for r in pts],
                label="Pareto-optimal (all tasks)" if on_front else "other trials",
                **style,
            )
        ax.set_xlabel(f"{a} (search)", fontsize="small")
        ax.set_ylabel(f"{b} (search)", fontsize="small")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize="x-small")
    fig.suptitle(f"Pareto front, 2-D projections: {study}", fontsize="small")
    fig.tight_layout()
    return fig


def _coefficient(row: dict[str, Any], repo: str) -> float | None:
    for ing in row.get("ingredients") or []:
        if ing["repo_id"] == repo:
            return float(ing["coefficient"])
    return None


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _html_page(
    *,
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
            f"<td>{esc(str(r.get('method', '')))}</td>"
            f"<td>{ings or '(target alone)'}</td>"
            f"<td>{esc(str(r.get('worker', '')))}</td>"
            "</tr>"
        )
    gain = f"{trial_value(best) - target[0]:+.2f}" if target[0] is not None else "—"
    imgs = "\n".join(
        f'<figure><img src="{name}" alt="{name}"><figcaption>{name}</figcaption></figure>' for name in plots
    )
    table = (
        "<table><thead><tr><th>trial</th><th>search</th><th>held-out</th><th>method</th>"
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
<td>{_fmt(next((r.get("score_heldout") for r in rows if r.get("trial_number") == best.number), None))}</td></tr>
<tr><td>gain on search</td><td>{gain}</td><td></td></tr>
</table>
<p>Selection used only the search split; held-out scores are reported for the top trials, never used to choose.
Importance method: {esc(importance.method)}.</p>
{imgs}
<h2>Leaderboard (top {len(top)})</h2>
{table}
<p>Interactive view: <code>optuna-dashboard &lt;storage URL&gt;</code>, then open study <code>{esc(study)}</code>.</p>
</body></html>
"""


def _save_figure(fig: Figure, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _safe_url(url: str) -> str:
    """The URL with any password masked, for error messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: show it as given
        return url
