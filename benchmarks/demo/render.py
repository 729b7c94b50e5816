"""The demo's renderers: the terminal tables, the final JSON line, and the report's index page."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.demo.config import DemoSummary, MultiTaskResult, TaskResult
from search.tasks import get_task
from search.tasks.naming import split_sources


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _gain(best: float | None, target: float | None) -> str:
    return "-" if best is None or target is None else f"{best - target:+.2f}"


def _ingredients_text(ingredients: Sequence[dict[str, Any]]) -> str:
    if not ingredients:
        return "(target alone)"
    return ", ".join(
        f"{i['repo_id'].removeprefix('pico/t5-pico-')} x{i['coefficient']:.2f}" for i in ingredients
    )


def leaderboard_table(results: Sequence[TaskResult]) -> Table:
    """The demo's final table: per task, target vs best composition on both splits."""
    table = Table(title="taskvec demo: target vs best composition (chosen on the search split)")
    for col, justify in (
        ("task", "left"),
        ("search\ntarget", "right"),
        ("search\nbest", "right"),
        ("search\ngain", "right"),
        ("held-out\ntarget", "right"),
        ("held-out\nbest", "right"),
        ("held-out\ngain", "right"),
        ("trials\n(pruned)", "right"),
        ("composition (candidate x coefficient)", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    for r in results:
        table.add_row(
            r.task,
            _fmt(r.target_score_search),
            _fmt(r.best_score_search),
            _gain(r.best_score_search, r.target_score_search),
            _fmt(r.target_score_heldout),
            _fmt(r.best_score_heldout),
            _gain(r.best_score_heldout, r.target_score_heldout),
            f"{r.n_finished} ({r.n_pruned})",
            _ingredients_text(r.ingredients),
        )
    return table


BASELINE_LABELS = {
    "target": "target alone",
    "best-single": "best single (screened lambda)",
    "add-all": "add every ingredient (screened lambdas)",
    "global-lambda": "global lambda (FusionBench)",
    "search-best": "search's best",
}


MULTI_LABELS = {
    "target": "base alone",
    "best-single": "best single vector",
    "add-all": "add every vector (naive sum)",
}


def _ci(ci: dict[str, Any] | None) -> str:
    return "-" if ci is None else f"[{ci['lo']:+.2f}, {ci['hi']:+.2f}]"


def _composition(coefficients: dict[str, float]) -> str:
    items = [{"repo_id": r, "coefficient": c} for r, c in coefficients.items()]
    return _ingredients_text(items) if items else "(nothing added)"


def baselines_table(title: str, baselines: dict[str, Any], *, multi: bool = False) -> Table:
    """One study's baselines beside its result: objective on both splits, held-out gain with its interval.

    A multi-task study composes from the base: its "target" row is the base alone.
    """
    labels = {**BASELINE_LABELS, **(MULTI_LABELS if multi else {})}
    table = Table(title=title)
    for col, justify in (
        ("", "left"),
        ("search", "right"),
        ("held-out", "right"),
        ("held-out gain\nover target [95% CI]", "right"),
        ("composition", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    for row in baselines["rows"]:
        label = labels.get(row["name"], row["name"])
        if row["trial"] is not None:
            label += f" (trial {row['trial']})"
        table.add_row(
            label,
            _fmt(row["objective_search"]),
            _fmt(row["objective_heldout"]),
            f"{_gain(row['objective_heldout'], baselines['rows'][0]['objective_heldout'])} {_ci(row['gain_ci'])}",
            _composition(row["coefficients"]),
        )
    versus = baselines.get("best_vs_single_ci")
    if versus is not None:
        table.caption = f"search's best minus best single, held-out, paired bootstrap 95% CI: {_ci(versus)}"
    return table


def multitask_table(multi: MultiTaskResult) -> Table:
    """The demo's multi-task table: per task, held-out scores of each model; normalized means below."""
    search, heldout = split_sources(multi.search_from)
    table = Table(
        title=(
            f"one model for all tasks (held-out: {heldout}; normalized = 100 x mean of score / fine-tuned "
            f"score; chosen on the search split: {search})"
        )
    )
    columns = (
        "task",
        "fine-tuned\n(its own model)",
        "base",
        f"global lambda\n(= {multi.baseline_lambda:g}, FusionBench)",
        "multi-task search\n(best trial)",
    )
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for task in multi.finetuned_scores:
        table.add_row(
            task,
            _fmt(multi.finetuned_scores[task]["heldout"]),
            _fmt(multi.base_scores[task]["heldout"]),
            _fmt(multi.baseline_scores[task]["heldout"]),
            _fmt(multi.best_scores[task]["heldout"]),
        )
    for split in ("heldout", "search"):
        table.add_row(
            f"normalized mean ({'held-out' if split == 'heldout' else 'search'})",
            "100.00",
            _fmt(multi.base_normalized[split]),
            _fmt(multi.baseline_normalized[split]),
            _fmt(multi.best_normalized[split]),
            style="bold" if split == "heldout" else None,
        )
    return table


def write_index(out: Path, results: Sequence[TaskResult], multi: MultiTaskResult | None = None) -> Path:
    """`out/report/index.html`: the demo's table, linking each task's study report."""
    rows = "\n".join(
        "<tr>"
        f"<td><a href='{html.escape(Path(r.report).relative_to('report').as_posix())}'>{r.task}</a></td>"
        f"<td>{_fmt(r.target_score_search)}</td><td>{_fmt(r.best_score_search)}</td>"
        f"<td>{_gain(r.best_score_search, r.target_score_search)}</td>"
        f"<td>{_fmt(r.target_score_heldout)}</td><td>{_fmt(r.best_score_heldout)}</td>"
        f"<td>{_gain(r.best_score_heldout, r.target_score_heldout)}</td>"
        f"<td>{html.escape(_ingredients_text(r.ingredients))}</td>"
        "</tr>"
        for r in results
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>taskvec demo</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}</style>
</head><body><h1>taskvec demo on the pico zoo</h1>
<p>Compositions are chosen on the search split (from GLUE train); held-out (validation) scores are reported
beside, never used to choose. Each task links to its study's report.</p>
<table><tr><th>task</th><th>target search</th><th>best search</th><th>gain</th><th>target held-out</th>
<th>best held-out</th><th>gain</th><th>composition</th></tr>
{rows}
</table>
{"".join(_baselines_html(r.task, r.baselines) for r in results)}
{_multi_html(multi)}
</body></html>
"""
    path = out / "report" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _baselines_html(title: str, baselines: dict[str, Any] | None, *, multi: bool = False) -> str:
    """A study's baselines as an HTML table (the terminal's `baselines_table`)."""
    if baselines is None:
        return ""
    labels = {**BASELINE_LABELS, **(MULTI_LABELS if multi else {})}
    target = baselines["rows"][0]["objective_heldout"]
    rows = "\n".join(
        f"<tr><td>{html.escape(labels.get(b['name'], b['name']))}</td><td>{_fmt(b['objective_search'])}</td>"
        f"<td>{_fmt(b['objective_heldout'])}</td>"
        f"<td>{_gain(b['objective_heldout'], target)} {_ci(b['gain_ci'])}</td>"
        f"<td>{html.escape(_composition(b['coefficients']))}</td></tr>"
        for b in baselines["rows"]
    )
    versus = baselines.get("best_vs_single_ci")
    note = (
        "" if versus is None else f"<p>Search's best minus best single, held-out: {_ci(versus)} (95% CI).</p>"
    )
    return f"""<h3>{html.escape(title)}: baselines (held-out gain with its paired bootstrap 95% interval)</h3>
<table><tr><th></th><th>search</th><th>held-out</th><th>held-out gain [95% CI]</th><th>composition</th></tr>
{rows}
</table>{note}"""


def _multi_html(multi: MultiTaskResult | None) -> str:
    if multi is None:
        return ""
    rows = "\n".join(
        f"<tr><td>{html.escape(t)}</td><td>{_fmt(multi.finetuned_scores[t]['heldout'])}</td>"
        f"<td>{_fmt(multi.base_scores[t]['heldout'])}</td><td>{_fmt(multi.baseline_scores[t]['heldout'])}</td>"
        f"<td>{_fmt(multi.best_scores[t]['heldout'])}</td></tr>"
        for t in multi.finetuned_scores
    )
    link = html.escape(Path(multi.report).relative_to("report").as_posix())
    search, heldout = (html.escape(words) for words in split_sources(multi.search_from))
    return f"""<h2>One model for all tasks (<a href='{link}'>multi-task study</a>)</h2>
<p>Held-out scores ({heldout}); normalized mean = 100 x mean of each score over the task's own fine-tuned
model's. The global lambda ({multi.baseline_lambda:g}) and the composition were chosen on the search
split ({search}).</p>
<table><tr><th>task</th><th>fine-tuned</th><th>base</th><th>global lambda</th><th>multi-task search</th></tr>
{rows}
<tr><th>normalized mean</th><td>100.00</td><td>{_fmt(multi.base_normalized["heldout"])}</td>
<td>{_fmt(multi.baseline_normalized["heldout"])}</td><td>{_fmt(multi.best_normalized["heldout"])}</td></tr>
</table>
{_baselines_html("one model for all tasks", multi.baselines, multi=True)}"""


def print_summary(summary: DemoSummary, *, wall: float) -> None:
    """Print the demo's tables, where its report is, and the final JSON line."""
    console = Console(width=max(120, Console().width))  # the table stays readable when piped to a file
    console.print()
    console.print(leaderboard_table(summary.results))
    for r in summary.results:
        if r.baselines is not None:
            console.print(baselines_table(f"{r.task}: {_metric_note(r.task)}", r.baselines))
    if summary.multi is not None:
        console.print(multitask_table(summary.multi))
        if summary.multi.baselines is not None:
            title = f"one model for all tasks: {summary.multi.objective} of the tasks' scores"
            console.print(baselines_table(title, summary.multi.baselines, multi=True))
    console.print(f"report: {summary.report}", highlight=False)
    console.print(
        f"leaderboard again: TASKVEC_DB={summary.db_url} taskvec leaderboard", highlight=False, soft_wrap=True
    )
    console.print(f"demo wall time: {wall:.1f}s", highlight=False)
    print(json.dumps(summary_json(summary, wall=wall)))


def summary_json(summary: DemoSummary, *, wall: float) -> dict[str, Any]:
    """The demo's last line: wall time, stage timings, each task's figures and the multi-task figures."""
    return {
        "wall_s": round(wall, 1),
        "timings_s": {k: round(v, 1) for k, v in summary.timings.items()},
        "tasks": {
            r.task: {
                "target_search": r.target_score_search,
                "best_search": r.best_score_search,
                "target_heldout": r.target_score_heldout,
                "best_heldout": r.best_score_heldout,
                "trials": r.n_finished,
                "pruned": r.n_pruned,
                "baselines": _baselines_json(r.baselines),
            }
            for r in summary.results
        },
        "multitask": None if summary.multi is None else _multi_json(summary.multi),
    }


def _metric_note(task: str) -> str:
    spec = get_task(task)
    return f"{spec.metric_name} x100; search = carved from GLUE train, held-out = GLUE validation"


def _baselines_json(baselines: dict[str, Any] | None) -> dict[str, Any] | None:
    if baselines is None:
        return None
    rows = {
        b["name"]: {
            "search": b["objective_search"],
            "heldout": b["objective_heldout"],
            "gain_ci": _ends(b["gain_ci"]),
            "coefficients": {r: round(c, 4) for r, c in b["coefficients"].items()},
        }
        for b in baselines["rows"]
    }
    return {"rows": rows, "best_vs_single_ci": _ends(baselines["best_vs_single_ci"])}


def _ends(ci: dict[str, Any] | None) -> list[float] | None:
    return None if ci is None else [round(ci["lo"], 2), round(ci["hi"], 2)]


def _multi_json(multi: MultiTaskResult) -> dict[str, Any]:
    return {
        "baselines": _baselines_json(multi.baselines),
        "study": multi.study,
        "search_from": multi.search_from,
        "trials": multi.n_finished,
        "pruned": multi.n_pruned,
        "finetuned": multi.finetuned_scores,
        "best": multi.best_scores,
        "global_lambda": {"lambda": multi.baseline_lambda, "scores": multi.baseline_scores},
        "normalized_mean": {
            "base": multi.base_normalized,
            "global_lambda": multi.baseline_normalized,
            "best": multi.best_normalized,
        },
    }
