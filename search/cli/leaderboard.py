"""`taskvec leaderboard`: per task, the target against the best composition found."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from search.cli._config import study_config
from search.cli._options import REFRESH, CacheDirOpt, CsvOpt, DbOpt, DeviceOpt, JsonOpt, StorageOpt
from search.cli._render import (
    baselines_table,
    console,
    err_console,
    export_hint,
    gain_notes,
    leaderboard_table,
    pareto_table,
    to_json,
)

app = typer.Typer()


@app.command("leaderboard")
def leaderboard_command(
    *,
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    study: Annotated[str | None, typer.Option("--study", help="Only this study.")] = None,
    top: Annotated[
        int | None, typer.Option("--top", min=1, help="Rows per task (default: table 1, JSON/CSV all).")
    ] = None,
    pareto: Annotated[
        bool, typer.Option("--pareto", help="Only the rows on their study's Pareto front.")
    ] = False,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help="The obvious alternatives beside each study's best: target, best single, add-all, "
            "global lambda (both splits, held-out gain with its 95% interval).",
        ),
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="First score top rows lacking a held-out score.")
    ] = False,
    # A plain None, not REFRESH.data_dir: click resolves every default at parse time, and resolving that
    # one imports the scorer (torch) even for a plain `taskvec leaderboard`.
    data: Annotated[
        Path | None, typer.Option("--data", help="GLUE folder for --refresh (default: the study's).")
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Full repo ids and study names on one line each (no folding).")
    ] = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
    db: DbOpt = None,
    show_config: Annotated[
        bool, typer.Option("--config", help="Print the settings --study was created with (a --config file).")
    ] = False,
    storage: StorageOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = None,  # plain None: see --data above; each row keeps its own stored precision
) -> None:
    """Per task: the target against the best composition found (search and held-out scores) and the gain."""
    if show_config:  # a study's settings live in its Optuna storage, not in the taskvec database
        typer.echo(study_config(study=study, storage=storage), nl=False)
        return
    from registry.db import require_database

    # Read-only (bar --refresh's scores): never creates a database or its folder. Checked before
    # importing search.leaderboard (torch: seconds), so a wrong --db fails at once.
    require_database(db)
    from search import leaderboard
    from search.leaderboard.queries import check_known

    check_known(task=task, study=study, db_url=db)  # a typo is an error, not an empty table
    if refresh:
        from registry.constants import vector_cache_dir

        vectors = None if cache_dir is None else vector_cache_dir(cache_dir)
        n = leaderboard.refresh_heldout(
            db_url=db,
            study=study,
            task=task,
            top_n=top or REFRESH.top_n(),
            data_dir=data,
            cache_dir=vectors,
            device=device,
        )
        if not (as_json or as_csv):
            err_console.print(f"held-out scores computed for {n} rows")
    if baselines:
        _print_baselines(task=task, study=study, db_url=db, as_json=as_json)
        return
    if not (as_json or as_csv or pareto):
        _print_summary(task=task, study=study, top=top, wide=wide, db_url=db)
        return
    rows = leaderboard.query(db_url=db, task=task, study=study, top=top, pareto_only=pareto)
    if as_json or as_csv:
        typer.echo(to_json(rows) if as_json else leaderboard.to_csv(rows), nl=as_json)
    elif rows:
        console.print(pareto_table(rows))
    else:
        err_console.print("no Pareto-optimal rows (only `--objective pareto` studies mark a front)")


def _print_summary(
    *, task: str | None, study: str | None, top: int | None, wide: bool, db_url: str | None
) -> None:
    """The table of each task's best rows, the gain notes, and the command that exports the best row."""
    from search import leaderboard

    rows = leaderboard.summary(db_url=db_url, task=task, study=study, top=top or 1)
    table = leaderboard_table(rows, ranked=(top or 1) > 1, wide=wide)
    out = console
    if wide:  # a console as wide as the table needs (piped to a file or a pager), never folded
        width = console.measure(table, options=console.options.update(max_width=10_000)).maximum
        out = Console(markup=False, emoji=False, width=width)
    out.print(table)
    for line in gain_notes(rows):
        typer.echo(line)
    best = [r for r in rows if r["rank"] == 1]
    for r in best:  # results, so stdout: the command that turns the best row into a model
        task_note = r["task"] if len(best) > 1 else None
        typer.echo(export_hint(study=r["study"], trial=r["trial_number"], db_url=db_url, task=task_note))


def _print_baselines(*, task: str | None, study: str | None, db_url: str | None, as_json: bool) -> None:
    from search import leaderboard
    from search.study import baseline_studies, load_baselines
    from search.tasks.naming import search_from_of

    names = [study] if study else baseline_studies(task=task, db_url=db_url)
    found = [b for b in (load_baselines(study=n, db_url=db_url) for n in names) if b is not None]
    if as_json:
        typer.echo(to_json([b.as_dict() for b in found]))
        return
    if not found:
        where = f"study {study}" if study else (f"task {task}" if task else "any study")
        err_console.print(
            f"no baselines stored for {where}: a search stores them when its study finishes "
            "(rerun the same `taskvec search` command to add them to an older study)"
        )
        raise typer.Exit(1)
    for b in found:
        rows = leaderboard.query(db_url=db_url, study=b.study, top=1)  # the split its study searched on
        search_from = search_from_of(rows[0]) if rows else "train"
        console.print(baselines_table({**b.as_dict(), "search_from": search_from}))
