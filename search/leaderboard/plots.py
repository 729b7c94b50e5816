"""The report's figures, drawn on matplotlib's Agg canvas (no display, no global pyplot state).

- history: every completed trial's search score by trial number, the running best, the target.
- importance: each candidate's coefficient importance (fANOVA or |Spearman rho|, as labelled).
- coefficients: per candidate, its coefficient in each completed trial against that trial's score.
- pareto: every pair of tasks as a 2-D projection of the rows, the front highlighted.

Trials that failed a control guard are drawn apart and never count as the best.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure

from search.study import trial_feasible, trial_value


def history_figure(
    trials: Sequence[optuna.trial.FrozenTrial], *, study: str, target_search: float | None, maximize: bool
) -> Figure:
    """Search score by trial number, the running best of the feasible trials, the target's line."""
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


def importance_figure(values: dict[str, float], *, method: str, study: str) -> Figure:
    """Horizontal bars of the 20 most important names (`method`: fanova or spearman)."""
    items = list(values.items())[:20]
    fig = Figure(figsize=(7, max(2.5, 0.35 * len(items) + 1.2)), dpi=100)
    ax = fig.add_subplot()
    label = "fANOVA importance" if method == "fanova" else "|Spearman rho| with the score"
    if items:
        names = [_short(n) for n, _ in items][::-1]
        ax.barh(names, [v for _, v in items][::-1], color="C0")
        ax.set_xlabel(label)
    else:
        ax.text(0.5, 0.5, "too few trials to estimate importance", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"Coefficient importance: {study} ({method})")
    fig.tight_layout()
    return fig


def coefficients_figure(rows: Sequence[dict[str, Any]], *, study: str, target_search: float | None) -> Figure:
    """One panel per candidate: its coefficient in each leaderboard row against the row's search score."""
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


def pareto_figure(rows: Sequence[dict[str, Any]], *, study: str) -> Figure:
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


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]
