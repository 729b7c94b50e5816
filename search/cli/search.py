"""`taskvec search`: the Optuna study over the screened candidates; every default is `SearchConfig`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from search.cli._options import (
    SEARCH,
    CacheDirOpt,
    ConfigOpt,
    DataOpt,
    DbOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MethodOpt,
    MethodOptionOpt,
    SearchFromOpt,
    SearchSizeOpt,
    StorageOpt,
    TargetOpt,
)
from search.cli._render import export_hint, search_summary, to_json

if TYPE_CHECKING:  # the command imports search.study (torch) only when it runs: `--help` stays fast
    from search.study import SearchConfig, SearchSummary

app = typer.Typer()

TasksOpt = Annotated[
    str,
    typer.Option(
        "--task",
        "--tasks",
        help="mrpc, rte, cola or sst2; several comma-separated (mrpc,rte,cola,sst2) for one multi-task model.",
    ),
]
ObjectiveOpt = Annotated[
    str | None,
    typer.Option(
        "--objective",
        help="Several tasks: mean (default) | normalized-mean (each / its fine-tuned model) | pareto.",
    ),
]
ReferenceOpt = Annotated[
    list[str],
    typer.Option(
        "--reference",
        help="TASK=REPO_OR_PATH, repeatable: a task's own fine-tuned model (default: the one screened).",
    ),
]
ControlOpt = Annotated[
    list[str],
    typer.Option(
        "--control",
        help="TASK[:MAX_DROP], repeatable: infeasible if TASK drops more than MAX_DROP (1.0) below the target.",
    ),
]
TopKOpt = Annotated[
    int,
    typer.Option("--top-k", min=1, help="At most this many candidates (best screened first) in the search."),
]
MinGainOpt = Annotated[
    float,
    typer.Option(
        "--min-gain",
        help="A screened candidate enters when its gain on the search split is above this (points); "
        "when none is, the --top-k best enter anyway.",
    ),
]
TrialsOpt = Annotated[
    int, typer.Option("--trials", min=1, help="Finished trials the study must reach in total.")
]
TimeoutOpt = Annotated[
    str | None, typer.Option("--timeout", help="Stop this worker after e.g. 90s, 30m, 8h.")
]
SamplerOpt = Annotated[str, typer.Option("--sampler", help="tpe | random | cmaes | gp | nsga2.")]
StudyNameOpt = Annotated[
    str | None, typer.Option("--study", help="Study name (default: derived from the search).")
]
PruningOpt = Annotated[
    bool, typer.Option("--pruning/--no-pruning", help="Prune on nested prefixes of the split.")
]
SurrogateOpt = Annotated[
    bool,
    typer.Option(
        "--surrogate/--no-surrogate",
        help="Propose trials with the screening-informed surrogate (one task); exact scores still decide.",
    ),
]
PrunerOpt = Annotated[str, typer.Option("--pruner", help="sha (successive halving) | hyperband.")]
HeldoutTopOpt = Annotated[
    int, typer.Option("--heldout-top", min=0, help="Score this many best trials on held-out.")
]
LambdaMaxOpt = Annotated[float, typer.Option("--lambda-max", help="Upper bound of every coefficient.")]
HeartbeatOpt = Annotated[
    int, typer.Option("--heartbeat", min=1, help="Seconds between a trial's heartbeats.")
]
GraceOpt = Annotated[
    int, typer.Option("--grace", min=1, help="Seconds of silence before a trial counts as dead.")
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers", min=1, help="Worker processes on this study (one per GPU; the --trials total is shared)."
    ),
]
DevicesOpt = Annotated[
    str | None,
    typer.Option(
        "--devices", help="One worker per listed device: 0,1,2,3 (cuda:0 ...) or names (cuda:1,cpu)."
    ),
]


@app.command("search")
def search_command(
    *,
    task: TasksOpt,
    target: TargetOpt,
    objective: ObjectiveOpt = SEARCH.objective,
    reference: ReferenceOpt = (),
    control: ControlOpt = (),
    data: DataOpt = SEARCH.data_dir,
    top_k: TopKOpt = SEARCH.top_k,
    min_gain: MinGainOpt = SEARCH.min_gain,
    trials: TrialsOpt = SEARCH.n_trials,
    timeout: TimeoutOpt = SEARCH.timeout_s,
    method: MethodOpt = SEARCH.method,
    option: MethodOptionOpt = (),
    sampler: SamplerOpt = SEARCH.sampler,
    storage: StorageOpt = SEARCH.storage,
    study: StudyNameOpt = SEARCH.study_name,
    pruning: PruningOpt = SEARCH.pruning,
    pruner: PrunerOpt = SEARCH.pruner,
    surrogate: SurrogateOpt = SEARCH.surrogate,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.")] = SEARCH.seed,
    heldout_top: HeldoutTopOpt = SEARCH.heldout_top_n,
    search_size: SearchSizeOpt = SEARCH.search_size,
    search_from: SearchFromOpt = SEARCH.search_from,
    lambda_max: LambdaMaxOpt = SEARCH.lambda_max,
    heartbeat: HeartbeatOpt = SEARCH.heartbeat_interval,
    grace: GraceOpt = SEARCH.grace_period,
    device: DeviceOpt = SEARCH.device,
    dtype: DtypeOpt = SEARCH.dtype,
    workers: WorkersOpt = 1,
    devices: DevicesOpt = None,
    as_json: JsonOpt = False,
    db: DbOpt = SEARCH.db_url,
    cache_dir: CacheDirOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Optuna search over subsets and coefficients of the top-K screened candidates (rerun to resume)."""
    from registry.constants import vector_cache_dir
    from search.export import parse_options
    from search.study import SearchConfig, parse_duration
    from search.study.objectives import parse_control, parse_reference
    from search.vectors.composer import check_coefficients

    check_coefficients([lambda_max], what="--lambda-max")
    config = SearchConfig(
        task=task,
        target=target,
        objective=objective,
        references=dict(parse_reference(r) for r in reference),
        controls=tuple(parse_control(c) for c in control),
        data_dir=data,
        top_k=top_k,
        min_gain=min_gain,
        n_trials=trials,
        timeout_s=parse_duration(timeout) if timeout else None,
        method=method,
        method_options=parse_options(option),
        sampler=sampler,
        storage=storage,
        study_name=study,
        db_url=db,
        pruning=pruning,
        pruner=pruner,
        surrogate=surrogate,
        seed=seed,
        heldout_top_n=heldout_top,
        search_size=search_size,
        search_from=search_from,
        lambda_max=lambda_max,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        device=device,
        dtype=dtype,
        vector_cache=None if cache_dir is None else vector_cache_dir(cache_dir),
    )
    _echo(_run(config, workers=workers, devices=devices, progress=not as_json), as_json=as_json, db=db)


def _echo(summary: SearchSummary, *, as_json: bool, db: str | None) -> None:
    """The search's result on stdout: JSON, or the summary and the export command of its best row."""
    if as_json:
        typer.echo(to_json(summary.as_dict()))
        return
    typer.echo(search_summary(summary))
    if summary.best_trial is not None:  # the one step from this result to a model folder
        typer.echo(export_hint(study=summary.study_name, trial=summary.best_trial, db_url=db))


def _run(config: SearchConfig, *, workers: int, devices: str | None, progress: bool) -> SearchSummary:
    """The search in this process, or in one worker process per device (`--workers`, `--devices`)."""
    from search.study import run_search
    from search.study.workers import run_workers, worker_config, worker_devices

    planned = worker_devices(workers=workers, devices=devices, device=getattr(config, "device", None))
    if len(planned) == 1:
        return run_search(worker_config(config, index=0, device=planned[0]), progress=progress)
    return run_workers(config, devices=planned, progress=progress)
