"""The report's figures, drawn on matplotlib's Agg canvas (no display, no global pyplot state).

- history: every finished trial's search score by trial number (pruned ones at the score of the prefix
  they stopped on), the running best, the target (a multi-task study's: the base).
- importance: each candidate's coefficient importance (fANOVA, or Spearman's rho with its sign), with the
  number of trials it rests on and the sign of each coefficient's correlation with the score.
- coefficients: per candidate, its coefficient in each completed trial against that trial's score.
- pareto: every pair of tasks as a 2-D projection of the rows, the front highlighted.

Every figure names what its scores are (`score_label`: metric and split), wraps the study name under its
title, and has a legend entry for every marker and line. Trials that failed a control guard are drawn
apart and never count as the best.
"""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from search.study import trial_feasible, trial_value

# Characters of a title line at the figures' widths (7 in at the default font): study names run longer.
TITLE_WIDTH = 64
TARGET_STYLE = {"color": "C2", "linestyle": "--", "linewidth": 1.2}
PRUNED_LABEL = "pruned (its score on the prefix where it stopped)"


def _heading(fig: Figure, title: str, study: str, *, width: int = TITLE_WIDTH) -> None:
    """`title`, then the study name wrapped to fit (never clipped: constrained layout makes room)."""
    lines = textwrap.wrap(study, width, break_on_hyphens=True, break_long_words=True)
    fig.suptitle("\n".join([title, *lines]), fontsize="medium")


def _new_figure(width: float, height: float) -> Figure:
    # Constrained layout keeps the titles, the labels and a figure-level legend inside the canvas.
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def last_intermediate(trial: optuna.trial.FrozenTrial) -> tuple[int, float] | None:
    """(step, value) of the last rung a pruned trial reported (step: examples scored), if any."""
    if not trial.intermediate_values:
        return None
    step = max(trial.intermediate_values)
    return step, float(trial.intermediate_values[step])


def history_figure(
    trials: Sequence[optuna.trial.FrozenTrial],
    *,
    study: str,
    target_search: float | None,
    maximize: bool,
    pruned: Sequence[optuna.trial.FrozenTrial] = (),
    score_label: str = "score on the search split",
    target_label: str = "target",
) -> Figure:
    """Search score by trial number: completed trials, pruned ones where they stopped, the running best
    of the feasible trials and the target's line (`target_label`: `base alone` for several tasks)."""
    fig = _new_figure(7, 5.0)
    ax = fig.add_subplot()
    ok = [t for t in trials if trial_feasible(t)]
    bad = [t for t in trials if not trial_feasible(t)]
    ax.scatter([t.number for t in ok], [trial_value(t) for t in ok], s=14, alpha=0.8, label="completed trial")
    stopped = [(t.number, *last) for t in pruned if (last := last_intermediate(t)) is not None]
    if stopped:
        steps = sorted({s for _, s, _ in stopped})
        where = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
        ax.scatter(
            [n for n, _, _ in stopped],
            [v for _, _, v in stopped],
            s=18,
            marker="v",
            color="0.55",
            label=f"{PRUNED_LABEL}: {where} examples",
        )
    if bad:
        ax.scatter(
            [t.number for t in bad],
            [trial_value(t) for t in bad],
            s=18,
            marker="x",
            color="C3",
            label="failed a control guard (never the best)",
        )
    if ok:
        values = [trial_value(t) for t in ok]
        running = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        ax.step([t.number for t in ok], running, where="post", color="C1", label="best so far")
    if target_search is not None:
        ax.axhline(target_search, **TARGET_STYLE, label=f"{target_label} ({target_search:.1f})")
    ax.set_xlabel("trial number")
    ax.set_ylabel(_wrap_label(score_label))
    # Below the axes, never over a point.
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    ax.grid(alpha=0.3)
    _heading(fig, "Optimisation history", study)
    return fig


def importance_figure(
    values: dict[str, float],
    *,
    method: str,
    study: str,
    n_trials: int,
    rho: dict[str, float] | None = None,
) -> Figure:
    """Horizontal bars of the 20 most important names.

    `method` `spearman`: the bars are Spearman's rho with its sign; `fanova`: fANOVA importance, each bar
    coloured and labelled by the sign of its coefficient's rho with the score (`rho`).
    """
    rho = values if method == "spearman" else (rho or {})
    items = list(values.items())[:20]
    fig = _new_figure(7, max(3.0, 0.35 * len(items) + 1.9))
    ax = fig.add_subplot()
    if items:
        names = [_short(n) for n, _ in items][::-1]
        colours = ["C3" if rho.get(n, 0.0) < 0 else "C0" for n, _ in items][::-1]
        bars = ax.barh(names, [v for _, v in items][::-1], color=colours)
        if method == "spearman":
            ax.axvline(0.0, color="0.3", linewidth=0.8)
            ax.set_xlim(-1.05, 1.05)
            ax.set_xlabel(f"Spearman rho of the coefficient with the score (n = {n_trials} trials)")
        else:
            for bar, (name, _) in zip(bars, items[::-1], strict=True):
                if name in rho:
                    ax.annotate(
                        f" rho {rho[name]:+.2f}",
                        (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        va="center",
                        fontsize="x-small",
                    )
            ax.set_xlim(0, 1.18 * max(v for _, v in items))  # room for the rho labels
            ax.set_xlabel(f"fANOVA importance (n = {n_trials} trials)")
        ax.legend(
            handles=[
                Patch(color="C0", label="higher coefficient, higher score (rho > 0)"),
                Patch(color="C3", label="higher coefficient, lower score (rho < 0)"),
            ],
            loc="lower right",
            fontsize="x-small",
        )
    else:
        ax.text(0.5, 0.5, f"too few trials ({n_trials}) to estimate importance", ha="center", va="center")
        ax.set_axis_off()
    what = "fANOVA" if method == "fanova" else "Spearman rho"
    _heading(fig, f"Coefficient importance ({what})", study)
    return fig


def coefficients_figure(
    rows: Sequence[dict[str, Any]],
    *,
    study: str,
    target_search: float | None,
    score_label: str = "search score",
    target_label: str = "target",
) -> Figure:
    """One panel per candidate: its coefficient in each leaderboard row against the row's search score."""
    complete = [r for r in rows if r.get("score_search") is not None]
    repos = sorted({ing["repo_id"] for r in complete for ing in r.get("ingredients") or []})
    n = max(1, len(repos))
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig = _new_figure(max(7, 4 * cols), 3 * nrows + 1.4)
    if not repos:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no leaderboard rows with ingredients", ha="center", va="center")
        ax.set_axis_off()
        _heading(fig, "Per-candidate coefficient vs score", study)
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
        )
        excluded = [s for s, k in zip(score, inc, strict=True) if not k]
        if excluded:
            ax.scatter([0.0] * len(excluded), excluded, s=14, color="0.6", marker="x")
        if target_search is not None:
            ax.axhline(target_search, **TARGET_STYLE)
        ax.set_title(_short(repo), fontsize="small")
        ax.set_xlabel("coefficient", fontsize="small")
        ax.set_ylabel(_wrap_label(score_label, width=30), fontsize="small")
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], marker="o", linestyle="", color="C0", label="trial with this candidate"),
        Line2D([], [], marker="x", linestyle="", color="0.6", label="trial without it (drawn at 0)"),
    ]
    if target_search is not None:
        handles.append(Line2D([], [], **TARGET_STYLE, label=f"{target_label} ({target_search:.1f})"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    _heading(fig, "Per-candidate coefficient vs score", study, width=TITLE_WIDTH * cols // 2 + 10)
    return fig


def pareto_figure(rows: Sequence[dict[str, Any]], *, study: str) -> Figure:
    """Every pair of tasks as a 2-D projection of the feasible rows' search scores, the front highlighted."""
    feasible = [r for r in rows if r.get("feasible", True) and r.get("scores")]
    tasks = sorted(feasible[0]["scores"]) if feasible else []
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
    cols = min(3, max(1, len(pairs)))
    nrows = max(1, math.ceil(len(pairs) / cols))
    fig = _new_figure(max(7, 4 * cols), 3.6 * nrows + 1.2)
    if not pairs:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "a Pareto front needs at least two tasks", ha="center", va="center")
        ax.set_axis_off()
        _heading(fig, "Pareto front, 2-D projections", study)
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
        ax.set_xlabel(f"{a} (search split)", fontsize="small")
        ax.set_ylabel(f"{b} (search split)", fontsize="small")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize="x-small")
    _heading(fig, "Pareto front, 2-D projections", study, width=TITLE_WIDTH * cols // 2 + 10)
    return fig


def surrogate_figure(rows: Sequence[dict[str, Any]], *, study: str, rho: float | None) -> Figure:
    """The surrogate's prediction of each completed trial (made before it was scored) against its exact
    search score, with Spearman's rho in the title."""
    pts = [r for r in rows if r.get("surrogate_score") is not None]
    fig = _new_figure(7, 5)
    ax = fig.add_subplot()
    x = [float(r["surrogate_score"]) for r in pts]
    y = [float(r["score_search"]) for r in pts]
    ax.scatter(x, y, s=16, color="C0")
    if pts:
        lo, hi = min(x + y), max(x + y)
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, ls="--", label="surrogate = exact")
        ax.legend(fontsize="small")
    ax.set_xlabel("surrogate's prediction (search split)")
    ax.set_ylabel("exact score (search split)")
    ax.grid(alpha=0.3)
    what = "n/a" if rho is None else f"{rho:.2f}"
    _heading(fig, f"Surrogate vs exact: Spearman's rho {what} over {len(pts)} trials", study)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write `fig` as a PNG to a temporary name beside `path`, then rename (never a half file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _coefficient(row: dict[str, Any], repo: str) -> float | None:
    for ing in row.get("ingredients") or []:
        if ing["repo_id"] == repo:
            return float(ing["coefficient"])
    return None


def _wrap_label(text: str, width: int = 45) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]
