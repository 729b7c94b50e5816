"""`make demo`: the whole pipeline on the offline pico zoo, in minutes on two CPU cores.

    python -m benchmarks.demo --out demo-out [--zoo DIR] [--scale full|tiny] [--trials 24]

Builds (or reuses) the zoo, syncs the registry from its `hub/`, screens and searches each of the four GLUE
tasks with a small budget, prints the leaderboard (target vs best composition, search and held-out
scores) and writes a report per study plus an index page. Then one multi-task search composes the four
fine-tuned targets from the base into a single model (normalized mean: each task's score over its own
fine-tuned model's) and prints it beside each fine-tuned model and FusionBench's baseline, one global lambda
over the same four task vectors. Everything the demo writes, its database and
Optuna storage included, lives under `--out` (TASKVEC_HOME is pointed there), so it never touches the
user's own taskvec files. Rerunning reuses the zoo, the registry, the screenings and the studies: a
finished demo reruns in seconds, an interrupted one resumes. The last line printed is one JSON object.
"""

from __future__ import annotations

import html
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from registry.constants import ENV_DB, ENV_HOME
from search.tasks.glue import GLUE_TASKS

BASE_REPO = "pico/t5-pico"
TARGET_FMT = "pico/t5-pico-{task}"
DEMO_LAMBDAS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Attributes:
        out: folder for everything the demo writes (zoo by default, database, studies, report).
        zoo: an existing or wanted zoo folder (default `out/zoo`).
        scale: zoo scale when it must be built (`full` or `tiny`).
        seed: zoo seed.
        tasks: GLUE tasks to screen and search.
        trials: finished trials per study.
        top_k: screened candidates entering each search.
        heldout_top_n: best trials per study scored on the held-out split.
        search_size: examples in each search split (None: the data module's default).
        lambdas: the screening grid.
        progress: show progress bars.
        multi_trials: finished trials of the multi-task search (0 skips it; it needs two tasks or more).
        multi_objective: its objective (`normalized-mean`, `mean` or `pareto`).
        multi_search_size: examples in each task's search split for the multi-task search. Larger than the
            single-task splits: normalizing by a weak fine-tuned score (the pico CoLA target's MCC is ~15)
            magnifies that task's sampling noise, and on 200 examples the search chased it (search 88.6,
            held-out 49.7, below the base); on 1000 its held-out follows its search score.
    """

    out: Path
    zoo: Path | None = None
    scale: str = "full"
    seed: int = 0
    tasks: tuple[str, ...] = GLUE_TASKS
    trials: int = 24
    top_k: int = 4
    heldout_top_n: int = 3
    search_size: int | None = None
    lambdas: tuple[float, ...] = DEMO_LAMBDAS
    progress: bool = True
    multi_trials: int = 24
    multi_objective: str = "normalized-mean"
    multi_search_size: int | None = 1000


@dataclass(frozen=True)
class TaskResult:
    """One task's outcome: the target against the best composition found on the search split."""

    task: str
    study: str
    target: str
    target_score_search: float
    target_score_heldout: float | None
    best_trial: int | None
    best_score_search: float | None
    best_score_heldout: float | None
    ingredients: list[dict[str, Any]] = field(default_factory=list)
    n_finished: int = 0
    n_pruned: int = 0
    screened: int = 0
    report: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class MultiTaskResult:
    """The multi-task composition against each task's own fine-tuned model and the global-lambda baseline.

    Each `*_scores` maps task -> {"search", "heldout"}; each `*_normalized` maps split -> the normalized
    mean (100 x mean of score / fine-tuned score) over the tasks.
    """

    study: str
    objective: str
    n_finished: int
    n_pruned: int
    best_trial: int | None
    ingredients: list[dict[str, Any]]
    finetuned_scores: dict[str, dict[str, float]]
    base_scores: dict[str, dict[str, float]]
    best_scores: dict[str, dict[str, float | None]]
    baseline_lambda: float
    baseline_scores: dict[str, dict[str, float]]
    base_normalized: dict[str, float]
    best_normalized: dict[str, float | None]
    baseline_normalized: dict[str, float]
    report: str
    seconds: float


@dataclass(frozen=True)
class DemoSummary:
    """The demo's results and timings."""

    zoo: str
    db_url: str
    storage: str
    results: list[TaskResult]
    report: str
    timings: dict[str, float]
    multi: MultiTaskResult | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_urls(out: Path) -> tuple[str, str]:
    """(taskvec database URL, Optuna storage URL) of a demo folder."""
    home = out.resolve() / "home"
    return f"sqlite:///{home / 'taskvec.db'}", f"sqlite:///{home / 'optuna.db'}"


def ensure_zoo(path: Path, *, seed: int, scale: str, progress: bool) -> Path:
    """Reuse the complete zoo at `path` whatever its scale and seed, else build one with these.

    Returns:
        The zoo folder.

    Raises:
        DataError: if the build fails or `path` holds an unusable zoo.
    """
    from benchmarks.zoo import build

    stamp = path / ".complete"
    if stamp.is_file():
        try:
            info = json.loads(stamp.read_text())
            seed, scale = int(info["seed"]), str(info["scale"])
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable stamp: let build() report on the folder
    return build(out=path, seed=seed, scale=scale, progress=progress)


def run_demo(config: DemoConfig) -> DemoSummary:
    """Run the demo pipeline end to end.

    Args:
        config: what to run.

    Returns:
        Per-task results, the report's path and the wall time of each stage.

    Raises:
        TaskvecError: a stage failed with a user-facing reason (one line).
    """
    from registry.sync import sync
    from search.leaderboard.report import write_report
    from search.screen.run import screen
    from search.study.run import SearchConfig, run_search

    out = config.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    db_url, storage = demo_urls(out)
    # The demo's own home: vector cache, database and storage never mix with the user's.
    os.environ[ENV_HOME] = str(out / "home")
    os.environ.pop(ENV_DB, None)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    zoo = ensure_zoo(
        config.zoo or out / "zoo", seed=config.seed, scale=config.scale, progress=config.progress
    )
    timings["zoo_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sync(base=BASE_REPO, source=str(zoo / "hub"), db_url=db_url, progress=config.progress)
    timings["sync_s"] = time.perf_counter() - t0

    results: list[TaskResult] = []
    for task in config.tasks:
        t_task = time.perf_counter()
        target = TARGET_FMT.format(task=task)
        _say(config, f"\n[{task}] screening candidates for {target}")
        screened = screen(
            task=task,
            target=target,
            db_url=db_url,
            data_dir=zoo,
            lambdas=config.lambdas,
            search_size=config.search_size,
            progress=config.progress,
        )
        _say(config, f"[{task}] searching ({config.trials} trials over the top {config.top_k})")
        search = SearchConfig(
            task=task,
            target=target,
            data_dir=zoo,
            top_k=config.top_k,
            n_trials=config.trials,
            storage=storage,
            db_url=db_url,
            heldout_top_n=config.heldout_top_n,
            search_size=config.search_size,
            seed=config.seed,
        )
        summary = run_search(search, progress=config.progress)
        report_dir = out / "report" / task
        index = write_report(study=summary.study_name, storage=storage, db_url=db_url, out=report_dir)
        best = _best_row(summary.study_name, db_url=db_url)
        results.append(
            TaskResult(
                task=task,
                study=summary.study_name,
                target=target,
                target_score_search=summary.target_score_search,
                target_score_heldout=summary.target_score_heldout,
                best_trial=summary.best_trial,
                best_score_search=summary.best_score_search,
                best_score_heldout=summary.best_score_heldout,
                ingredients=list(best["ingredients"]) if best else [],
                n_finished=summary.n_finished,
                n_pruned=summary.n_pruned,
                screened=len(screened),
                report=str(index.relative_to(out)),
                seconds=time.perf_counter() - t_task,
            )
        )
        timings[f"{task}_s"] = results[-1].seconds

    multi = None
    if config.multi_trials > 0 and len(config.tasks) > 1:
        t_multi = time.perf_counter()
        _say(
            config,
            f"\n[{','.join(config.tasks)}] multi-task search from {BASE_REPO} ({config.multi_trials} trials)",
        )
        multi = run_multitask(config, zoo=zoo, out=out, db_url=db_url, storage=storage)
        timings["multitask_s"] = time.perf_counter() - t_multi

    report = _write_index(out, results, multi)
    timings["total_s"] = sum(timings.values())
    return DemoSummary(
        zoo=str(zoo),
        db_url=db_url,
        storage=storage,
        results=results,
        report=str(report),
        timings=timings,
        multi=multi,
    )


def run_multitask(config: DemoConfig, *, zoo: Path, out: Path, db_url: str, storage: str) -> MultiTaskResult:
    """One model for all the demo's tasks: a multi-task search over their fine-tuned targets, and the baseline.

    Each task's fine-tuned model (its reference) is its pico target, named explicitly: the screenings above
    ran on the smaller single-task splits. `top_k` = the number of tasks keeps the ingredients to exactly
    those models, FusionBench's setting.
    """
    from search.errors import SearchError
    from search.leaderboard.report import write_report
    from search.leaderboard.rows import study_best
    from search.study.objectives import combine
    from search.study.run import SearchConfig, global_lambda_baseline, run_search

    started = time.perf_counter()
    search = SearchConfig(
        task=",".join(config.tasks),
        target=BASE_REPO,
        objective=config.multi_objective,
        references={t: TARGET_FMT.format(task=t) for t in config.tasks},
        data_dir=zoo,
        top_k=len(config.tasks),
        n_trials=config.multi_trials,
        storage=storage,
        db_url=db_url,
        heldout_top_n=config.heldout_top_n,
        search_size=config.multi_search_size,
        seed=config.seed,
    )
    summary = run_search(search, progress=config.progress)
    baseline = global_lambda_baseline(search)
    best = study_best(study=summary.study_name, db_url=db_url)
    if best is None:
        raise SearchError(f"multi-task study {summary.study_name} finished no trial")
    index = write_report(
        study=summary.study_name, storage=storage, db_url=db_url, out=out / "report" / "multitask"
    )
    refs = best["reference_scores"]
    finetuned = {
        t: {"search": refs[t]["score_search"], "heldout": refs[t]["score_heldout"]} for t in config.tasks
    }
    base = {t: dict(best["metrics"]["target"][t]) for t in config.tasks}
    best_scores = {t: dict(best["scores"][t]) for t in config.tasks}

    def normalized(scores: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
        out_: dict[str, float | None] = {}
        for split in ("search", "heldout"):
            values = {t: scores[t].get(split) for t in config.tasks}
            if any(v is None for v in values.values()):
                out_[split] = None
                continue
            refs_split = {t: finetuned[t][split] for t in config.tasks}
            out_[split] = combine(values, kind="normalized-mean", references=refs_split)
        return out_

    return MultiTaskResult(
        study=summary.study_name,
        objective=summary.objective,
        n_finished=summary.n_finished,
        n_pruned=summary.n_pruned,
        best_trial=summary.best_trial,
        ingredients=list(best["ingredients"]),
        finetuned_scores=finetuned,
        base_scores=base,
        best_scores=best_scores,
        baseline_lambda=baseline.lambda_,
        baseline_scores=baseline.scores,
        base_normalized=normalized(base),
        best_normalized=normalized(best_scores),
        baseline_normalized=normalized(baseline.scores),
        report=str(index.relative_to(out)),
        seconds=time.perf_counter() - started,
    )


def _best_row(study: str, *, db_url: str) -> dict[str, Any] | None:
    from search.leaderboard.rows import study_best

    return study_best(study=study, db_url=db_url)


def _say(config: DemoConfig, text: str) -> None:
    if config.progress:
        print(text, flush=True)


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


def leaderboard_table(results: Sequence[TaskResult]):
    """The demo's final table: per task, target vs best composition on both splits."""
    from rich.table import Table

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


def multitask_table(multi: MultiTaskResult):
    """The demo's multi-task table: per task, held-out scores of each model; normalized means below."""
    from rich.table import Table

    table = Table(
        title=(
            "one model for all tasks (held-out split; normalized = 100 x mean of score / fine-tuned score; "
            "chosen on the search split)"
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


def _write_index(out: Path, results: Sequence[TaskResult], multi: MultiTaskResult | None = None) -> Path:
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
{_multi_html(multi)}
</body></html>
"""
    path = out / "report" / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


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
    return f"""<h2>One model for all tasks (<a href='{link}'>multi-task study</a>)</h2>
<p>Held-out scores; normalized mean = 100 x mean of each score over the task's own fine-tuned model's.
The global lambda ({multi.baseline_lambda:g}) and the composition were chosen on the search split.</p>
<table><tr><th>task</th><th>fine-tuned</th><th>base</th><th>global lambda</th><th>multi-task search</th></tr>
{rows}
<tr><th>normalized mean</th><td>100.00</td><td>{_fmt(multi.base_normalized["heldout"])}</td>
<td>{_fmt(multi.baseline_normalized["heldout"])}</td><td>{_fmt(multi.best_normalized["heldout"])}</td></tr>
</table>"""


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse options, run, print the table and a final JSON line."""
    import argparse

    from rich.console import Console

    from registry.errors import TaskvecError

    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="Folder for everything written.")
    parser.add_argument(
        "--zoo", type=Path, default=None, help="Zoo folder (default OUT/zoo; built if needed)."
    )
    parser.add_argument("--scale", default="full", choices=("full", "tiny"), help="Zoo scale if built.")
    parser.add_argument("--trials", type=int, default=DemoConfig.trials, help="Finished trials per study.")
    parser.add_argument("--top-k", type=int, default=DemoConfig.top_k, help="Candidates per search.")
    parser.add_argument("--tasks", default=",".join(GLUE_TASKS), help="Comma-separated GLUE tasks.")
    parser.add_argument("--search-size", type=int, default=None, help="Examples in each search split.")
    parser.add_argument(
        "--multi-trials",
        type=int,
        default=DemoConfig.multi_trials,
        help="Multi-task search trials (0 skips).",
    )
    parser.add_argument(
        "--multi-search-size",
        type=int,
        default=DemoConfig.multi_search_size,
        help="Examples in each task's search split for the multi-task search.",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load drowns the demo's output
    # Two cores shared by the scorer and the sampler: more threads only contend.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    config = DemoConfig(
        out=args.out,
        zoo=args.zoo,
        scale=args.scale,
        trials=args.trials,
        top_k=args.top_k,
        search_size=args.search_size,
        multi_trials=args.multi_trials,
        multi_search_size=args.multi_search_size,
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        progress=not args.quiet,
    )
    started = time.perf_counter()
    try:
        summary = run_demo(config)
    except TaskvecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    console = Console(width=max(120, Console().width))  # the table stays readable when piped to a file
    console.print()
    console.print(leaderboard_table(summary.results))
    if summary.multi is not None:
        console.print(multitask_table(summary.multi))
    console.print(f"report: {summary.report}", highlight=False)
    console.print(
        f"leaderboard again: TASKVEC_DB={summary.db_url} taskvec leaderboard", highlight=False, soft_wrap=True
    )
    console.print(f"demo wall time: {wall:.1f}s", highlight=False)
    print(
        json.dumps(
            {
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
                    }
                    for r in summary.results
                },
                "multitask": None
                if summary.multi is None
                else {
                    "study": summary.multi.study,
                    "trials": summary.multi.n_finished,
                    "pruned": summary.multi.n_pruned,
                    "finetuned": summary.multi.finetuned_scores,
                    "best": summary.multi.best_scores,
                    "global_lambda": {
                        "lambda": summary.multi.baseline_lambda,
                        "scores": summary.multi.baseline_scores,
                    },
                    "normalized_mean": {
                        "base": summary.multi.base_normalized,
                        "global_lambda": summary.multi.baseline_normalized,
                        "best": summary.multi.best_normalized,
                    },
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
