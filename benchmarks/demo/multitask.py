"""The demo's multi-task step: one model for all its tasks, beside FusionBench's global-lambda baseline."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.demo.config import BASE_REPO, TARGET_FMT, DemoConfig, MultiTaskResult
from benchmarks.zoo import load_manifest
from search.errors import SearchError
from search.leaderboard import study_best, write_report
from search.study import SearchConfig, load_baselines, run_search
from search.study.objectives import combine

Scores = dict[str, dict[str, float | None]]  # task -> split ("search", "heldout") -> score


def run_multitask(config: DemoConfig, *, zoo: Path, out: Path, db_url: str, storage: str) -> MultiTaskResult:
    """One model for all the demo's tasks: a multi-task search over their fine-tuned targets, and the baseline.

    Each task's fine-tuned model (its reference) is its pico target, named explicitly: the screenings above
    ran on the smaller single-task splits. `top_k` = the number of tasks keeps the ingredients to exactly
    those models, FusionBench's setting.
    """
    started = time.perf_counter()
    # Zoo v4 names each task's multi-task model (fine-tuned well above the base); older zoos: the targets.
    models = load_manifest(zoo).get("multitask") or {}
    search = SearchConfig(
        task=",".join(config.tasks),
        target=BASE_REPO,
        objective=config.multi_objective,
        references={t: models.get(t, TARGET_FMT.format(task=t)) for t in config.tasks},
        data_dir=zoo,
        top_k=len(config.tasks),
        n_trials=config.multi_trials,
        storage=storage,
        db_url=db_url,
        heldout_top_n=config.heldout_top_n,
        search_size=config.multi_search_size,
        search_from=config.multi_search_from,
        seed=config.seed,
    )
    summary = run_search(search, progress=config.progress)
    baselines = load_baselines(study=summary.study_name, db_url=search.db_url)
    if baselines is None:
        raise SearchError(f"multi-task study {summary.study_name} stored no baselines")
    baseline = baselines.get("global-lambda")
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
        baseline_lambda=next(iter(baseline.coefficients.values()), 0.0),
        baseline_scores=baseline.scores,
        base_normalized=normalized(base, tasks=config.tasks, finetuned=finetuned),
        best_normalized=normalized(best_scores, tasks=config.tasks, finetuned=finetuned),
        baseline_normalized=normalized(baseline.scores, tasks=config.tasks, finetuned=finetuned),
        report=str(index.relative_to(out)),
        seconds=time.perf_counter() - started,
        baselines=baselines.as_dict(),
        search_from=config.multi_search_from,
    )


def normalized(scores: Scores, *, tasks: Sequence[str], finetuned: Scores) -> dict[str, float | None]:
    """Per split, 100 x the mean of each task's score over its fine-tuned model's (None if a score is missing)."""
    out: dict[str, float | None] = {}
    for split in ("search", "heldout"):
        values = {t: scores[t].get(split) for t in tasks}
        if any(v is None for v in values.values()):
            out[split] = None
            continue
        refs_split = {t: finetuned[t][split] for t in tasks}
        out[split] = combine(values, kind="normalized-mean", references=refs_split)
    return out
