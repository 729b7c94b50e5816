"""The `taskvec` command: subcommands map to plain typed functions in `registry` and `search`.

Errors a user can act on (`TaskvecError`) print as one line; `--debug` (or TASKVEC_DEBUG=1) shows the
traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from registry import __version__
from registry import cli as registry_cli
from registry.constants import ENV_DEBUG
from registry.errors import TaskvecError

app = typer.Typer(
    name="taskvec",
    help="Find T5 checkpoints whose task vectors improve a fine-tuned model, and search their compositions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(registry_cli.app, name="registry")
app.add_typer(registry_cli.db_app, name="db")

err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskvec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    if debug:
        os.environ[ENV_DEBUG] = "1"


# --- commands: each a thin wrapper over a function of search/ or registry/ -------------------------------
# (finetune: search/finetune.py; eval: search/scoring.py; merge: search/export.py; screen/search/leaderboard/
# export/report: search/screen.py, study.py, leaderboard.py)


@app.command("finetune")
def finetune_command(
    base: str = typer.Option(
        ..., "--base", help="Pretrained model: folder or Hub repo id (e.g. google-t5/t5-base)."
    ),
    task: str = typer.Option(..., "--task", help="mrpc, rte, cola, sst2 (or an auxiliary task)."),
    data: Path = typer.Option(
        ..., "--data", help="GLUE-layout folder: DATA/<task>/train-00000-of-00001.parquet."
    ),
    out: Path = typer.Option(..., "--out", help="Output model folder (safetensors, tokenizer, card)."),
    max_train: int | None = typer.Option(None, "--max-train", help="Use a seeded subset of N training rows."),
    epochs: float = typer.Option(3.0, "--epochs", help="Passes over the training rows."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (overrides --epochs)."),
    lr: float = typer.Option(5e-4, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(32, "--batch-size", help="Examples per step."),
    seed: int = typer.Option(0, "--seed", help="Seeds the subset, order and dropout."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision of the base."),
) -> None:
    """Fine-tune a T5 base on one task in T5's text-to-text format and save a Hub-like model folder."""
    from search.finetune import finetune

    folder = finetune(
        base=base,
        task=task,
        data_dir=data,
        out=out,
        max_train=max_train,
        epochs=epochs,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        revision=revision,
    )
    typer.echo(f"saved {folder}")


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="Model folder or Hub repo id."),
    task: str = typer.Option("all", "--task", help="mrpc, rte, cola, sst2 or all."),
    data: Path | None = typer.Option(None, "--data", help="Local GLUE parquet folder (default: the Hub)."),
    split: str = typer.Option("heldout", "--split", help="heldout (validation) or search (from train)."),
    mode: str = typer.Option("rank", "--mode", help="rank (rank classification) or generate (greedy)."),
    size: int | None = typer.Option(None, "--size", help="Split size (default: all of heldout)."),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision of the model."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per task instead of a table."),
) -> None:
    """Score a model on GLUE tasks with the paper's metrics (x100)."""
    import json

    from search.scoring.scorer import evaluate, iter_tasks

    results = evaluate(
        model=model,
        tasks=list(iter_tasks(task)),
        split=split,
        mode=mode,
        data_dir=data,
        size=size,
        revision=revision,
        progress=not as_json,
    )
    if as_json:
        for r in results:
            typer.echo(json.dumps({"model": model, **r.summary()}))
        return
    from rich.table import Table

    table = Table(title=f"{model} ({split} split, {mode})")
    for col in ("task", "n", "score", "metrics"):
        table.add_column(col, justify="left" if col in ("task", "metrics") else "right")
    for r in results:
        extra = ", ".join(f"{k} {v:.2f}" for k, v in r.metrics.items() if k != "score")
        table.add_row(r.task, str(r.n), f"{r.score:.2f}", extra)
    Console().print(table)


@app.command("merge")
def merge_command(
    base: str | None = typer.Option(None, "--base", help="Pretrained base: folder or repo id."),
    target: str | None = typer.Option(None, "--target", help="Fine-tuned target: folder or repo id."),
    add: list[str] = typer.Option(
        [], "--add", help="REPO_OR_PATH=COEF, repeatable; negative COEF subtracts (forgetting, analogies)."
    ),
    method: str = typer.Option("task_arithmetic", "--method", help="task_arithmetic, ties or dare."),
    option: list[str] = typer.Option(
        [], "--option", help="Method option KEY=VALUE, repeatable (ties: density; dare: p, seed)."
    ),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Rebuild exactly from a recipe.yaml (instead of --base/--target/--add)."
    ),
    out: Path = typer.Option(Path("merged"), "--out", help="Output folder (default: ./merged)."),
    db: str | None = typer.Option(None, "--db", help="taskvec database URL, for registry repo ids."),
) -> None:
    """Merge task vectors into a target: theta_T + sum lambda_i tau_i (or TIES/DARE), with its recipe."""
    from registry.errors import ModelError
    from search.export.folder import merge, parse_addition, parse_options, reproduce

    if recipe is not None:
        if base or target or add or option:
            raise ModelError(
                "--recipe fixes everything: do not combine it with --base/--target/--add/--option"
            )
        folder = reproduce(recipe_path=recipe, out=out, db_url=db)
    else:
        if not base or not target:
            raise ModelError("give --base and --target (or --recipe)")
        folder, _ = merge(
            base=base,
            target=target,
            additions=[parse_addition(a) for a in add],
            out=out,
            method=method,
            method_options=parse_options(option),
            db_url=db,
        )
    typer.echo(f"merged model written: {folder}")


@app.command("report")
def report_command(
    study: str = typer.Option(..., "--study", help="Study name (as `taskvec search` printed it)."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG plots and index.html."),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default: beside the DB)."
    ),
    db: str | None = typer.Option(None, "--db", help="taskvec database URL (default: TASKVEC_DB or SQLite)."),
) -> None:
    """Write a study's report: optimisation history, coefficient importance, per-candidate plots, HTML."""
    from search.leaderboard.report import write_report

    index = write_report(study=study, storage=storage, db_url=db, out=out)
    typer.echo(f"report written: {index}")


# --- screen / search / leaderboard / export (search/screen.py, study.py, leaderboard.py) ---------------


@app.command("screen")
def screen_command(
    task: str = typer.Option(..., "--task", help="mrpc, rte, cola or sst2."),
    target: str = typer.Option(
        ..., "--target", help="Target repo id as synced into the registry, or its folder."
    ),
    data: Path | None = typer.Option(None, "--data", help="Local GLUE parquet folder (default: the Hub)."),
    lambdas: str | None = typer.Option(
        None, "--lambdas", help="Comma-separated lambda grid (default 0.1..1.3)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Screen at most this many new candidates."),
    search_size: int | None = typer.Option(
        None, "--search-size", min=1, help="Examples in the search split."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the screenings as a JSON list."),
    db: str | None = typer.Option(None, "--db", help="taskvec database URL (default: TASKVEC_DB or SQLite)."),
) -> None:
    """Score theta_T + lambda * tau_i for every compatible candidate on the search split (resumable)."""
    import json

    from search.screen.run import DEFAULT_LAMBDAS, parse_lambdas, screen

    rows = screen(
        task=task,
        target=target,
        db_url=db,
        data_dir=data,
        lambdas=parse_lambdas(lambdas) if lambdas else DEFAULT_LAMBDAS,
        limit=limit,
        search_size=search_size,
        progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    from rich.table import Table

    table = Table(title=f"screening {task}: {target}")
    for col in ("candidate", "best lambda", "score", "target", "gain", "lambdas tried"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for r in rows:
        colour = "green" if r["gain"] > 0 else "red"
        table.add_row(
            r["candidate_repo"],
            f"{r['best_lambda']:.2f}",
            f"{r['best_score']:.2f}",
            f"{r['target_score']:.2f}",
            f"[{colour}]{r['gain']:+.2f}[/]",
            str(len(r["lambdas"])),
        )
    Console().print(table)


@app.command("search")
def search_command(
    task: str = typer.Option(
        ...,
        "--task",
        "--tasks",
        help="mrpc, rte, cola or sst2; several comma-separated (mrpc,rte,cola,sst2) for one multi-task model.",
    ),
    target: str = typer.Option(
        ...,
        "--target",
        help="Target repo id as synced into the registry, or its folder (multi-task: usually the base).",
    ),
    objective: str | None = typer.Option(
        None,
        "--objective",
        help="Several tasks: mean (default) | normalized-mean (each / its fine-tuned model) | pareto.",
    ),
    reference: list[str] = typer.Option(
        [],
        "--reference",
        help="TASK=REPO_OR_PATH, repeatable: a task's own fine-tuned model (default: the one screened).",
    ),
    control: list[str] = typer.Option(
        [],
        "--control",
        help="TASK[:MAX_DROP], repeatable: infeasible if TASK drops more than MAX_DROP (1.0) below the target.",
    ),
    data: Path | None = typer.Option(None, "--data", help="Local GLUE parquet folder (default: the Hub)."),
    top_k: int = typer.Option(16, "--top-k", min=1, help="Candidates (best screened first) in the search."),
    trials: int = typer.Option(100, "--trials", min=1, help="Finished trials the study must reach in total."),
    timeout: str | None = typer.Option(None, "--timeout", help="Stop this worker after e.g. 90s, 30m, 8h."),
    method: str = typer.Option("task_arithmetic", "--method", help="task_arithmetic | ties | dare."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe | random | cmaes | gp | nsga2."),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL (default: SQLite beside the DB)."
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (default: derived from the search)."),
    pruning: bool = typer.Option(
        True, "--pruning/--no-pruning", help="Prune on nested prefixes of the split."
    ),
    pruner: str = typer.Option("sha", "--pruner", help="sha (successive halving) | hyperband."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    heldout_top: int = typer.Option(
        3, "--heldout-top", min=0, help="Score this many best trials on held-out."
    ),
    search_size: int | None = typer.Option(
        None, "--search-size", min=1, help="Examples in the search split."
    ),
    lambda_max: float = typer.Option(1.5, "--lambda-max", help="Upper bound of every coefficient."),
    heartbeat: int = typer.Option(10, "--heartbeat", min=1, help="Seconds between a trial's heartbeats."),
    grace: int = typer.Option(30, "--grace", min=1, help="Seconds of silence before a trial counts as dead."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    db: str | None = typer.Option(None, "--db", help="taskvec database URL (default: TASKVEC_DB or SQLite)."),
) -> None:
    """Optuna search over subsets and coefficients of the top-K screened candidates (rerun to resume)."""
    import json

    from search.study.objectives import parse_control, parse_reference
    from search.study.run import SearchConfig, parse_duration, run_search

    references: dict[str, str] = {}
    for text in reference:
        ref_task, repo = parse_reference(text)
        references[ref_task] = repo
    config = SearchConfig(
        task=task,
        target=target,
        objective=objective,
        references=references,
        controls=tuple(parse_control(c) for c in control),
        data_dir=data,
        top_k=top_k,
        n_trials=trials,
        timeout_s=parse_duration(timeout) if timeout else None,
        method=method,
        sampler=sampler,
        storage=storage,
        study_name=study,
        db_url=db,
        pruning=pruning,
        pruner=pruner,
        seed=seed,
        heldout_top_n=heldout_top,
        search_size=search_size,
        lambda_max=lambda_max,
        heartbeat_interval=heartbeat,
        grace_period=grace,
    )
    summary = run_search(config, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), default=str))
        return
    best = "none completed" if not summary.n_infeasible else "none feasible"
    if summary.best_trial is not None:
        held = "" if summary.best_score_heldout is None else f", held-out {summary.best_score_heldout:.2f}"
        best = f"trial {summary.best_trial}: search {summary.best_score_search:.2f}{held}"
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
    typer.echo(
        f"study {summary.study_name}: {summary.n_finished} finished ({summary.n_pruned} pruned), "
        f"{summary.trials_here} here in {summary.elapsed_s:.1f}s ({summary.stopped})\n"
        f"target: search {summary.target_score_search:.2f}{target_held}\nbest {best}"
    )


@app.command("leaderboard")
def leaderboard_command(
    task: str | None = typer.Option(None, "--task", help="Only this task."),
    study: str | None = typer.Option(None, "--study", help="Only this study."),
    top: int | None = typer.Option(None, "--top", min=1, help="Rows per task (JSON/CSV; table: 5)."),
    pareto: bool = typer.Option(False, "--pareto", help="Only the rows on their study's Pareto front."),
    refresh: bool = typer.Option(False, "--refresh", help="First score top rows lacking a held-out score."),
    data: Path | None = typer.Option(
        None, "--data", help="GLUE folder for --refresh (default: the study's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of row objects."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
    db: str | None = typer.Option(None, "--db", help="taskvec database URL (default: TASKVEC_DB or SQLite)."),
) -> None:
    """Per task: the target against the best composition found (search and held-out scores) and the gain."""
    import json

    from search.leaderboard import rows as lb

    if refresh:
        n = lb.refresh_heldout(db_url=db, study=study, task=task, top_n=top or 3, data_dir=data)
        if not (as_json or as_csv):
            err_console.print(f"held-out scores computed for {n} rows")
    if as_json or as_csv:
        rows = lb.query(db_url=db, task=task, study=study, top=top, pareto_only=pareto)
        typer.echo(json.dumps(rows, default=str) if as_json else lb.to_csv(rows), nl=as_json)
        return
    from rich.table import Table

    def fmt(value: float | None, signed: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value:+.2f}" if signed else f"{value:.2f}"

    if pareto:
        rows = lb.query(db_url=db, task=task, study=study, top=top, pareto_only=True)
        if not rows:
            err_console.print("no Pareto-optimal rows (only `--objective pareto` studies mark a front)")
            return
        tasks = list(rows[0]["scores"])
        table = Table(title="Pareto front (search split; held-out beside, never used to choose)")
        for col in ("study#trial", *(f"{t}\nsearch / held-out" for t in tasks), "mean", "ingredients"):
            table.add_column(col, justify="left" if col in ("study#trial", "ingredients") else "right")
        for r in rows:
            cells = [f"{fmt(r['scores'][t]['search'])} / {fmt(r['scores'][t].get('heldout'))}" for t in tasks]
            ingredients = ", ".join(f"{i['repo_id']}x{i['coefficient']:.2f}" for i in r["ingredients"])
            table.add_row(f"{r['study']}#{r['trial_number']}", *cells, fmt(r["score_search"]), ingredients)
        Console().print(table)
        return

    table = Table(title="taskvec leaderboard (best chosen on the search split)")
    for col in (
        "task",
        "target",
        "target search",
        "target held-out",
        "best search",
        "best held-out",
        "gain search",
        "gain held-out",
        "ingredients",
        "study#trial",
    ):
        table.add_column(
            col, justify="left" if col in ("task", "target", "ingredients", "study#trial") else "right"
        )
    for s in lb.summary(db_url=db, task=task, study=study):
        ingredients = (
            ", ".join(f"{i['repo_id']}x{i['coefficient']:.2f}" for i in s["ingredients"]) or "(target)"
        )
        table.add_row(
            s["task"],
            s["target_repo"],
            fmt(s["target_score_search"]),
            fmt(s["target_score_heldout"]),
            fmt(s["best_score_search"]),
            fmt(s["best_score_heldout"]),
            fmt(s["gain_search"], True),
            fmt(s["gain_heldout"], True),
            ingredients,
            f"{s['study']}#{s['trial_number']}",
        )
    Console().print(table)


@app.command("export")
def export_command(
    study: str = typer.Option(..., "--study", help="Study name."),
    trial: int | None = typer.Option(None, "--trial", help="Trial number (default: the best on search)."),
    out: Path = typer.Option(..., "--out", help="Folder for the merged model and its recipe."),
    db: str | None = typer.Option(None, "--db", help="taskvec database URL (default: TASKVEC_DB or SQLite)."),
) -> None:
    """Export a leaderboard composition as a loadable model folder with recipe.yaml."""
    from search.export import export_trial

    folder = export_trial(study=study, trial=trial, out=out, db_url=db)
    typer.echo(f"exported: {folder}")


def main() -> None:
    """Console entry point: run the app, turning user-facing errors into one line."""
    try:
        code = app(standalone_mode=False)
        # Outside standalone mode typer turns Ctrl-C into Exit(130) and `typer.Exit(n)` into a returned
        # code instead of raising: honour both, or an interrupted search would exit 0.
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
    except TaskvecError as exc:
        if os.environ.get(ENV_DEBUG):
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted: completed work is saved; rerun the same command to resume")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors: typer shows them with the command's help hint
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get(ENV_DEBUG):
            raise
        err_console.print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
