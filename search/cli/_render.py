"""Every table and summary the commands print, in one place (rows in, rich tables or text out)."""

from __future__ import annotations

import csv
import io
import json
import shlex
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from search.scoring import ScoreResult
    from search.screen.stream import StreamStats
    from search.study import SearchSummary

# No markup or emoji codes: every string printed is literal. Repo ids, paths and error messages are the
# user's text ("[red]org/name", "[nan]", ":x:") and rich would eat or replace them; styling is a `Text`.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)


def _table(title: str, columns: Iterable[str], *, left: Iterable[str]) -> Table:
    """A table with `columns`; those in `left` (text) align left, the rest (numbers) right."""
    # At least as wide as its title (rich wraps a title to the table's width: "(heldout split,\n rank)");
    # rich still shrinks it to a narrower terminal.
    table = Table(title=title, min_width=len(title))
    left = set(left)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    return table


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _gain(value: float) -> Text:
    return Text(f"{value:+.2f}", style="green" if value > 0 else "red")


def _naming() -> Any:
    """`search.tasks.naming`, the one place that names a score's metric and split.

    Lazy: `search.tasks` imports pandas and scikit-learn (a second), and `_render` is imported at start-up
    by every command, `taskvec --help` included.
    """
    from search.tasks import naming

    return naming


def score_caption(rows: Sequence[dict[str, Any]]) -> str:
    """The footnote of a table of leaderboard rows or summaries: each task's metric, both splits' sources,
    how a multi-task score combines (`search.tasks.naming.score_footnote`)."""
    naming = _naming()
    return naming.score_footnote(
        [r["task"] for r in rows],
        search_from=[naming.search_from_of(r) for r in rows],
        objectives=[r.get("objective") or "score" for r in rows],
    )


def _ingredients(ingredients: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{i['repo_id']} ×{i['coefficient']:.2f}" for i in ingredients)


def short_ingredient(repo_id: str, coefficient: float, *, target: str) -> str:
    """`name ×0.50`: the repo id without its organisation when the target shares it (the table is narrow)."""
    org, _, name = repo_id.rpartition("/")
    shown = name if org and target.startswith(f"{org}/") else repo_id
    return f"{shown} ×{coefficient:.2f}"


def eval_table(results: Sequence[ScoreResult], *, model: str, split: str, mode: str) -> Table:
    """`taskvec eval`: one row per task, the paper's score and the other metrics."""
    table = _table(
        f"{model} ({split} split, {mode})", ("task", "n", "score", "metrics"), left=("task", "metrics")
    )
    for r in results:
        extra = ", ".join(f"{k} {v:.2f}" for k, v in r.metrics.items() if k != "score")
        table.add_row(r.task, str(r.n), f"{r.score:.2f}", extra)
    table.caption = "score: " + _naming().metric_footnote(r.task for r in results)
    return table


def _scored_on(row: dict[str, Any]) -> tuple[str, bool]:
    """(examples a screening was scored on, marked when a race dropped it or is still racing it; whether
    it is a full-split row)."""
    from search.tables import screening_state  # sqlalchemy only; `_render` loads at every start-up

    state = screening_state(row)
    n = row.get("n_scored")
    n_text = "-" if n is None else str(n)
    if state == "eliminated":
        return f"{n_text} dropped (round {row['eliminated_round']})", False
    if state == "racing":
        return f"{n_text} racing", False
    return n_text, True


def screening_table(rows: Sequence[dict[str, Any]], *, task: str, target: str) -> Table:
    """`taskvec screen`: each candidate's best lambda and its gain over the target, full-split rows first;
    a row a racing screen dropped says on how many examples it was scored (the column is shown only
    then: candidate names keep the width otherwise)."""
    scored = [_scored_on(r) for r in rows]
    partial = not all(full for _, full in scored)
    columns = ("candidate", "best lambda", "score", "target", "gain", "lambdas tried")
    table = _table(
        f"screening {task}: {target}", (*columns, "examples") if partial else columns, left=("candidate",)
    )
    for r, (examples, _) in zip(rows, scored, strict=True):
        cells = [
            r["candidate_repo"],
            f"{r['best_lambda']:.2f}",
            f"{r['best_score']:.2f}",
            f"{r['target_score']:.2f}",
            _gain(r["gain"]),
            str(len(r["lambdas"])),
        ]
        table.add_row(*cells, *([examples] if partial else []))
    naming = _naming()
    table.caption = naming.search_footnote([task], search_from=[naming.search_from_of(r) for r in rows])
    if partial:
        table.caption += (
            "; dropped: left a racing screen on that prefix (score and target on those examples), "
            "ranked below full-split rows"
        )
    return table


def helpful_table(rows: Sequence[dict[str, Any]], *, task: str | None = None) -> Table:
    """`taskvec helpful`: screened candidates ranked by their best gain (`task` names the metric)."""
    columns = ("repo", "revision", "status", "gain", "best lambda", "score", "target", "examples")
    table = _table("candidates ranked by screening gain", columns, left=("repo", "revision", "status"))
    for r in rows:
        state = r.get("state", "full")
        n = r.get("n_scored")
        table.add_row(
            r["repo_id"],
            r["revision"][:8],
            r["status"],
            _gain(r["gain"]),
            f"{r['best_lambda']:.2f}",
            f"{r['best_score']:.2f}",
            f"{r['target_score']:.2f}",
            ("-" if n is None else str(n)) + ("" if state == "full" else f" {state}"),
        )
    if task is not None:  # screenings of several targets and splits: the split is named, not its source
        table.caption = f"{_naming().metric_footnote([task])}; all on the search split of each screening"
    return table


def helpful_csv(rows: Sequence[dict[str, Any]], *, columns: Sequence[str]) -> str:
    """`taskvec helpful --csv`: `columns` of each row, newline-terminated."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _arrow(before: float | None, after: float | None) -> str:
    return f"{_num(before)} → {_num(after)}"


def gain_with_interval(gain: float | None, ci: dict[str, Any] | None) -> str:
    """`+6.17 [+1.23, +10.50]`: a held-out gain with its paired bootstrap interval (`-` when unscored)."""
    if gain is None:
        return "-"
    if not ci:
        return _num(gain, signed=True)  # a row scored before intervals were stored
    return f"{gain:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]"


def leaderboard_table(
    summaries: Sequence[dict[str, Any]], *, ranked: bool = False, wide: bool = False
) -> Table:
    """`taskvec leaderboard`: per task, the target against its best compositions (search and held-out).

    Laid out for 100 columns: the target under its task, target → best per split, the held-out gain with
    its 95% interval, the study#trial key under the ingredients. `ranked` adds each row's rank in its task
    (what `taskvec export --task T --rank N` takes) beside the task: a column of its own would push the
    table past 100 columns. `wide` keeps full repo ids (print it with a width that needs no folding).
    """
    title = "taskvec leaderboard (best chosen on the search split)"
    table = Table(title=title)
    table.add_column("task #rank\ntarget" if ranked else "task\ntarget", justify="left", overflow="fold")
    for col in ("search\ntarget → best", "held-out\ntarget → best", "gain [lo, hi]\nheld-out, 95%"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("ingredients\nstudy#trial", justify="left", overflow="fold", min_width=16)
    for s in summaries:
        target = str(s["target_repo"])
        names = [
            short_ingredient(i["repo_id"], i["coefficient"], target="" if wide else target)
            for i in s["ingredients"]
        ] or ["(target)"]
        rank = f" #{s['rank']}" if ranked else ""
        table.add_row(
            f"{s['task']}{rank}\n{s['target_repo']}",
            _arrow(s["target_score_search"], s["best_score_search"]),
            _arrow(s["target_score_heldout"], s["best_score_heldout"]),
            gain_with_interval(s["gain_heldout"], s.get("gain_ci")),
            "\n".join([*names, f"{s['study']}#{s['trial_number']}"]),
        )
    if summaries:
        table.caption = score_caption(summaries)
    return table


BASELINE_LABELS = {
    "target": "target alone",
    "best-single": "best single\n(screened λ)",
    "add-all": "add every\ningredient",
    "global-lambda": "global λ\n(FusionBench)",
    "search-best": "search's best",
}


def baselines_table(baselines: dict[str, Any]) -> Table:
    """`taskvec leaderboard --baselines`: a study's obvious alternatives beside its best, both splits.

    One row per baseline (`search.study.Baselines.as_dict()`), the objective on each split, the held-out
    gain over the target with its 95% interval, the vectors one per line; the search's best minus the
    best single in the caption. A multi-task study's target is the base.
    """
    multi = len(baselines["tasks"]) > 1
    what = (
        f"{baselines['objective']} over {', '.join(baselines['tasks'])}" if multi else baselines["tasks"][0]
    )
    table = Table(title=f"baselines of {baselines['study']} ({what})")
    table.add_column("baseline", justify="left")
    for col in ("search", "held-out", "gain [lo, hi]\nheld-out, 95%"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("vectors x λ", justify="left", overflow="fold", min_width=16)
    target = baselines["rows"][0]["objective_heldout"]
    for b in baselines["rows"]:
        label = BASELINE_LABELS.get(b["name"], b["name"])
        if multi and b["name"] == "target":
            label = "base alone"
        if b.get("trial") is not None:
            label += f"\n(trial {b['trial']})"
        names = [f"{r} x{c:.2f}" for r, c in b["coefficients"].items()] or ["(none)"]
        table.add_row(
            label,
            _num(b["objective_search"]),
            _num(b["objective_heldout"]),
            gain_with_interval(b["objective_heldout"] - target, b.get("gain_ci")),
            "\n".join(names),
        )
    versus = baselines.get("best_vs_single_ci")
    naming = _naming()
    notes = [
        naming.score_footnote(
            baselines["tasks"],
            search_from=baselines.get("search_from") or "train",
            objectives=[baselines["objective"]],
        )
    ]
    if versus:
        notes.insert(
            0,
            f"search's best - best single, held-out: {gain_with_interval(versus['gain'], versus)} "
            f"(95% paired bootstrap){'' if versus['lo'] > 0 or versus['hi'] < 0 else ': not significant'}",
        )
    table.caption = "\n".join(notes)
    return table


def gain_notes(summaries: Sequence[dict[str, Any]]) -> list[str]:
    """One line per summary row with an interval: its held-out gain, the interval and what it says."""
    lines = []
    for s in summaries:
        ci = s.get("gain_ci")
        if ci and s.get("verdict"):
            lines.append(
                f"{s['task']}: held-out gain {gain_with_interval(s['gain_heldout'], ci)} "
                f"({100 * ci['level']:g}% paired bootstrap, {ci['resamples']} resamples): {s['verdict']}"
            )
    return lines


def export_hint(*, study: str, trial: int, db_url: str | None, task: str | None = None) -> str:
    """The exact `taskvec export` command for a row (`task`, when given, follows as a shell comment)."""
    args = ["taskvec", "export", "--study", f"{study}#{trial}", "--out", "OUT"]
    if db_url:  # the database the row came from: without it the command would read the default one
        args += ["--db", db_url]
    return "export: " + shlex.join(args) + (f"  # {task}" if task else "")


def pareto_table(rows: Sequence[dict[str, Any]]) -> Table:
    """`taskvec leaderboard --pareto`: the front's rows, every task's search and held-out scores."""
    tasks = list(rows[0]["scores"])
    columns = ("study#trial", *(f"{t}\nsearch / held-out" for t in tasks), "mean", "ingredients")
    title = "Pareto front (search split; held-out beside, never used to choose)"
    table = _table(title, columns, left=("study#trial", "ingredients"))
    for r in rows:
        cells = [f"{_num(r['scores'][t]['search'])} / {_num(r['scores'][t].get('heldout'))}" for t in tasks]
        table.add_row(
            f"{r['study']}#{r['trial_number']}",
            *cells,
            _num(r["score_search"]),
            _ingredients(r["ingredients"]),
        )
    table.caption = score_caption(rows)
    return table


def _search_gain(summary: SearchSummary) -> str:
    """`, held-out gain +1.20 [-0.80, +3.10]: no significant gain` for a best row with an interval."""
    ci = getattr(summary, "best_gain_ci", None)
    if not ci or summary.best_score_heldout is None or summary.target_score_heldout is None:
        return ""
    # Lazy: the verdict's one definition lives with the bootstrap (search.scoring pulls in torch, which
    # a finished search has loaded already).
    from search.scoring.bootstrap import verdict

    gain = summary.best_score_heldout - summary.target_score_heldout
    return f", held-out gain {gain_with_interval(gain, ci)}: {verdict(ci)}"


def search_summary(summary: SearchSummary) -> str:
    """`taskvec search`: the study's state, the target's scores and the best trial."""
    best = "none completed" if not summary.n_infeasible else "none feasible"
    if summary.best_trial is not None:
        held = "" if summary.best_score_heldout is None else f", held-out {summary.best_score_heldout:.2f}"
        best = f"trial {summary.best_trial}: search {summary.best_score_search:.2f}{held}"
        best += _search_gain(summary)
        if summary.best_scores:
            best += " (" + ", ".join(f"{t} {v:.2f}" for t, v in summary.best_scores.items()) + ")"
    extra = ""
    if summary.objective != "score":
        extra += f"objective {summary.objective}"
    if summary.n_pareto:
        extra += f", {summary.n_pareto} rows on the Pareto front (taskvec leaderboard --pareto --study ...)"
    if summary.n_infeasible:
        extra += f", {summary.n_infeasible} trials failed a control guard"
    if extra:
        best += "\n" + extra.lstrip(", ")
    target_held = (
        "" if summary.target_score_heldout is None else f", held-out {summary.target_score_heldout:.2f}"
    )
    # The split's source is the study's (its leaderboard rows and `leaderboard` say it); the metric here.
    naming = _naming()
    metric = naming.metric_footnote([summary.task])
    combined = naming.OBJECTIVE_LABELS.get(summary.objective)
    return (
        f"study {summary.study_name}: {summary.n_finished} finished ({summary.n_pruned} pruned), "
        f"{summary.trials_here} here in {summary.elapsed_s:.1f}s ({summary.stopped})\n"
        f"target: search {summary.target_score_search:.2f}{target_held}\nbest {best}\n"
        f"scores: {metric}" + (f"; {combined}" if combined else "")
    )


def stream_summary(stats: StreamStats) -> str:
    """`taskvec screen --max-cached M`: what streaming the candidates cost (one line)."""

    def mb(n: int) -> str:
        return f"{n / 1e6:,.1f} MB"

    return (
        f"streamed candidates: {stats.downloads} snapshots downloaded ({mb(stats.bytes_downloaded)}), "
        f"{stats.deleted} deleted after use; peak disk {mb(stats.peak_disk)} "
        f"(at most {stats.peak_snapshots} of --max-cached {stats.max_cached} snapshots at once, plus vectors: "
        f"{stats.vectors_deleted} deleted, the best {stats.keep_vectors} kept); "
        f"{stats.wait_s:.1f}s waiting on downloads"
    )


def to_json(value: Any) -> str:
    """One JSON document (dates and paths as strings)."""
    return json.dumps(value, default=str)
