"""The report's `index.html`: what a study found, every number named (metric, split), the plots with real
captions, the baselines, the top leaderboard rows and the command that opens the study in optuna-dashboard.

Plain HTML with the PNGs beside it (no script, no external asset), so the folder can be mailed or served.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from search.scoring.bootstrap import verdict
from search.study import Baselines

TOP_ROWS_IN_HTML = 20

# What each plot shows, as its caption on the page (the file name says nothing to a reader).
CAPTIONS = {
    "history.png": (
        "Optimisation history: each completed trial's score on the search split by trial number (pruned "
        "trials at the score of the prefix where they stopped; trials that failed a control guard as red "
        "crosses), the running best of the feasible trials, and the {target} as a dashed line."
    ),
    "importance.png": (
        "Coefficient importance over {n} completed trials: {method}. Blue bars: a higher coefficient goes "
        "with a higher score (Spearman rho > 0); red: with a lower one."
    ),
    "coefficients.png": (
        "Per candidate: its coefficient in each completed trial against the trial's search score (grey "
        "crosses at 0: trials that left it out); the dashed line is the {target}."
    ),
    "pareto.png": (
        "Pareto front: every pair of tasks as a 2-D projection of the feasible trials' search scores; red "
        "points are on the front over all tasks."
    ),
    "surrogate.png": (
        "Surrogate vs exact: each completed trial's surrogate prediction (made before it was scored, from "
        "the screening grid corrected by the trials before it) against its exact search score; Spearman's "
        "rho in the title. The surrogate only proposes: every score in this report is exact."
    ),
}


@dataclass(frozen=True)
class PageFacts:
    """What the page states besides the rows (the report gathers it from the study).

    Attributes:
        study: the study name.
        task: its task label (`a,b` for several).
        footnote: the metric and the splits of every score (`search.tasks.naming.score_footnote`).
        counts: trial state -> number of trials (`complete`, `pruned`, `fail`, `infeasible`, ...).
        best_number: the best feasible completed trial.
        best_search: its search score.
        target: (search, held-out) score of the target (the base alone for several tasks).
        target_label: `target` or `base alone`.
        importance_method: a sentence naming the importance method.
        n_importance: trials the importance rests on.
        storage: the Optuna storage URL (password hidden), for optuna-dashboard.
        password_hidden: whether `storage` had its password replaced by `***`.
    """

    study: str
    task: str
    footnote: str
    counts: dict[str, int]
    best_number: int
    best_search: float
    target: tuple[float | None, float | None]
    target_label: str
    importance_method: str
    n_importance: int
    storage: str
    password_hidden: bool


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def gain_cell(row: dict[str, Any] | None) -> str:
    """A row's held-out gain over the target with its paired bootstrap interval and what it says."""
    if row is None or row.get("gain_heldout") is None:
        return "—"
    ci = row.get("gain_ci")
    if not ci:
        return f"{row['gain_heldout']:+.2f}"
    return f"{row['gain_heldout']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}] ({verdict(ci)})"


def baselines_html(baselines: Baselines | None) -> str:
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
            f"<tr><td>{esc(name)}{trial}</td><td>{fmt(b.objective_search)}</td>"
            f"<td>{fmt(b.objective_heldout)}</td><td>{cell}</td><td>{vectors}</td></tr>"
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


def _rows_table(rows: Sequence[dict[str, Any]]) -> str:
    esc = html.escape
    body = []
    for r in rows[:TOP_ROWS_IN_HTML]:
        ings = "<br>".join(
            f"{esc(i['repo_id'])}@{esc(str(i['revision'])[:10])} × {float(i['coefficient']):.3f}"
            for i in r.get("ingredients") or []
        )
        body.append(
            "<tr>"
            f"<td>{r.get('trial_number')}</td>"
            f"<td>{fmt(r.get('score_search'))}</td>"
            f"<td>{fmt(r.get('score_heldout'))}</td>"
            f"<td>{esc(gain_cell(r))}</td>"
            f"<td>{esc(str(r.get('method', '')))}</td>"
            f"<td>{ings or '(target alone)'}</td>"
            f"<td>{esc(str(r.get('worker', '')))}</td>"
            "</tr>"
        )
    if not body:
        return "<p>No leaderboard rows for this study.</p>"
    return (
        f"<h2>Leaderboard (top {len(body)} by search score)</h2>"
        "<table><thead><tr><th>trial</th><th>search</th><th>held-out</th>"
        "<th>held-out gain [95% CI]</th><th>method</th>"
        "<th>ingredients (repo@revision × coefficient)</th><th>worker</th></tr></thead><tbody>"
        + "\n".join(body)
        + "</tbody></table>"
    )


def _counts_line(counts: dict[str, int]) -> str:
    """`16 finished: 12 completed, 4 pruned` (plus failed, running and guard-failed trials when any)."""
    done = counts.get("complete", 0) + counts.get("pruned", 0)
    parts = [f"{counts.get('complete', 0)} completed", f"{counts.get('pruned', 0)} pruned"]
    for key, words in (("infeasible", "failed a control guard"), ("fail", "failed"), ("running", "running")):
        if counts.get(key):
            parts.append(f"{counts[key]} {words}")
    return f"{done} finished trials: " + ", ".join(parts)


def _figures(plots: Sequence[str], facts: PageFacts) -> str:
    esc = html.escape
    out = []
    for name in plots:
        caption = CAPTIONS.get(name, name).format(
            target=facts.target_label, n=facts.n_importance, method=facts.importance_method
        )
        out.append(
            f'<figure><img src="{esc(name)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)} Scores: {esc(facts.footnote)}.</figcaption></figure>"
        )
    return "\n".join(out)


def html_page(
    *, facts: PageFacts, rows: Sequence[dict[str, Any]], baselines: str, plots: Sequence[str]
) -> str:
    """The whole page (`facts` for the summary, the study's leaderboard `rows` best first)."""
    esc = html.escape
    best_row = next((r for r in rows if r.get("trial_number") == facts.best_number), None)
    search_gain = "—" if facts.target[0] is None else f"{facts.best_search - facts.target[0]:+.2f}"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    dashboard = shlex.join(["optuna-dashboard", facts.storage])
    hidden = " (password hidden: put yours back in)" if facts.password_hidden else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>taskvec report: {esc(facts.study)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }} figcaption {{ color: #333; max-width: 60em; }}
code {{ background: #f4f4f4; overflow-wrap: anywhere; }} h1 {{ overflow-wrap: anywhere; }}
.note {{ color: #444; font-size: 0.9em; }}
</style></head><body>
<h1>taskvec report: {esc(facts.study)}</h1>
<p>Task <b>{esc(facts.task)}</b>; {esc(_counts_line(facts.counts))}; generated {generated}.</p>
<p class="note">Scores: {esc(facts.footnote)}.</p>
<table>
<tr><th></th><th>search split</th><th>held-out split</th></tr>
<tr><td>{esc(facts.target_label)}</td><td>{fmt(facts.target[0])}</td><td>{fmt(facts.target[1])}</td></tr>
<tr><td>best trial (#{facts.best_number})</td><td>{fmt(facts.best_search)}</td>
<td>{fmt(None if best_row is None else best_row.get("score_heldout"))}</td></tr>
<tr><td>gain over the {esc(facts.target_label)} [paired bootstrap 95% CI]</td><td>{search_gain}</td>
<td>{esc(gain_cell(best_row))}</td></tr>
</table>
<p class="note">Selection used only the search split; held-out scores are computed for the top trials
after the search, never used to choose. Importance: {esc(facts.importance_method)}.</p>
{baselines}
{_figures(plots, facts)}
{_rows_table(rows)}
<p>Interactive view: <code>{esc(dashboard)}</code>{esc(hidden)}, then open study
<code>{esc(facts.study)}</code>.</p>
</body></html>
"""
