"""The demo's pipeline: zoo, registry sync, per task a screening, a search and a report, then the rest.

The rest is the multi-task search (`benchmarks.demo.multitask`) and the index page.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.demo.config import (
    BASE_REPO,
    TARGET_FMT,
    DemoConfig,
    DemoSummary,
    MultiTaskResult,
    TaskResult,
    demo_urls,
)
from benchmarks.demo.multitask import run_multitask
from benchmarks.demo.render import write_index
from benchmarks.zoo import build, load_manifest
from registry.constants import ENV_DB, ENV_HOME
from registry.sync import sync
from search.leaderboard import study_best, write_report
from search.screen import screen
from search.study import SearchConfig, load_baselines, run_search


@dataclass(frozen=True)
class _Place:
    """Where one demo run reads and writes: its folder, the zoo, the database and the Optuna storage."""

    out: Path
    zoo: Path
    db_url: str
    storage: str


def ensure_zoo(path: Path, *, seed: int, scale: str, progress: bool) -> Path:
    """Reuse the complete zoo at `path` whatever its scale and seed, else build one with these.

    Returns:
        The zoo folder.

    Raises:
        DataError: if the build fails or `path` holds an unusable zoo.
    """
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

    place = _Place(out=out, zoo=zoo, db_url=db_url, storage=storage)
    results: list[TaskResult] = []
    for task in config.tasks:
        results.append(run_task(config, task=task, place=place))
        timings[f"{task}_s"] = results[-1].seconds

    multi = _run_multitask_step(config, place=place, timings=timings)
    report = write_index(out, results, multi)
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


def run_task(config: DemoConfig, *, task: str, place: _Place) -> TaskResult:
    """One task: screen the candidates for its target, search their compositions, write the study's report."""
    t_task = time.perf_counter()
    target = TARGET_FMT.format(task=task)
    _say(config, f"\n[{task}] screening candidates for {target}")
    # Zoo v4's multi-task models are fine-tuned on each target's own task with all its data: a better
    # target, not a helper. The single-task stage asks what *other* models add, so they sit it out.
    multitask_models = tuple(load_manifest(place.zoo).get("multitask", {}).values())
    screened = screen(
        task=task,
        target=target,
        exclude=multitask_models,
        db_url=place.db_url,
        data_dir=place.zoo,
        lambdas=config.lambdas,
        search_size=config.search_size,
        progress=config.progress,
    )
    _say(config, f"[{task}] searching ({config.trials} trials over the top {config.top_k})")
    search = SearchConfig(
        task=task,
        target=target,
        data_dir=place.zoo,
        top_k=config.top_k,
        n_trials=config.trials,
        storage=place.storage,
        db_url=place.db_url,
        heldout_top_n=config.heldout_top_n,
        search_size=config.search_size,
        seed=config.seed,
    )
    summary = run_search(search, progress=config.progress)
    baselines = load_baselines(study=summary.study_name, db_url=search.db_url)
    report_dir = place.out / "report" / task
    index = write_report(study=summary.study_name, storage=place.storage, db_url=place.db_url, out=report_dir)
    best = study_best(study=summary.study_name, db_url=place.db_url)
    return TaskResult(
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
        report=str(index.relative_to(place.out)),
        seconds=time.perf_counter() - t_task,
        baselines=None if baselines is None else baselines.as_dict(),
    )


def _run_multitask_step(
    config: DemoConfig, *, place: _Place, timings: dict[str, float]
) -> MultiTaskResult | None:
    """The multi-task search, when asked for and there are several tasks (its time into `timings`)."""
    if config.multi_trials <= 0 or len(config.tasks) <= 1:
        return None
    t_multi = time.perf_counter()
    _say(
        config,
        f"\n[{','.join(config.tasks)}] multi-task search from {BASE_REPO} ({config.multi_trials} trials)",
    )
    multi = run_multitask(config, zoo=place.zoo, out=place.out, db_url=place.db_url, storage=place.storage)
    timings["multitask_s"] = time.perf_counter() - t_multi
    return multi


def _say(config: DemoConfig, text: str) -> None:
    if config.progress:
        print(text, flush=True)
