"""`taskvec screen` and `taskvec helpful`: score candidates one at a time, rank them by their gain."""

from __future__ import annotations

from typing import Annotated

import typer

from search.cli._options import (
    HELPFUL,
    SCREEN,
    CacheDirOpt,
    ConfigOpt,
    CsvOpt,
    DataOpt,
    DbOpt,
    JsonOpt,
    SearchFromOpt,
    SearchSizeOpt,
    TargetOpt,
    TaskOpt,
)
from search.cli._render import console, helpful_csv, helpful_table, screening_table, to_json

app = typer.Typer()


def _comma_separated(values: tuple[float, ...]) -> str:
    return ",".join(str(v) for v in values)


@app.command("screen")
def screen_command(
    *,
    task: TaskOpt,
    target: TargetOpt,
    data: DataOpt = SCREEN.data_dir,
    lambdas: Annotated[
        str, typer.Option("--lambdas", help="Comma-separated lambda grid.")
    ] = SCREEN.lambdas.map(_comma_separated),
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Screen at most this many new candidates.")
    ] = SCREEN.limit,
    search_size: SearchSizeOpt = SCREEN.search_size,
    search_from: SearchFromOpt = SCREEN.search_from,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            help="Leave out repos matching this shell pattern (e.g. 'org/*-large'); repeatable.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    db: DbOpt = SCREEN.db_url,
    cache_dir: CacheDirOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Score theta_T + lambda * tau_i for every compatible candidate on the search split (resumable)."""
    from registry.constants import vector_cache_dir
    from search.screen import parse_lambdas, screen

    rows = screen(
        task=task,
        target=target,
        db_url=db,
        data_dir=data,
        lambdas=parse_lambdas(lambdas),
        limit=limit,
        search_size=search_size,
        search_from=search_from,
        exclude=tuple(exclude or ()),
        vector_cache=None if cache_dir is None else vector_cache_dir(cache_dir),
        progress=not as_json,
    )
    if as_json:
        typer.echo(to_json(rows))
        return
    console.print(screening_table(rows, task=task, target=target))


@app.command("helpful")
def helpful_command(
    *, task: TaskOpt, as_json: JsonOpt = False, as_csv: CsvOpt = False, db: DbOpt = HELPFUL.db_url
) -> None:
    """Rank the screened candidates by their best gain on a task (after `taskvec screen`)."""
    from registry.db import require_database

    require_database(db)  # read-only: never creates a database; checked before importing torch
    from search.screen import helpful_for
    from search.screen.store import HELPFUL_COLUMNS

    ranked = helpful_for(task, db_url=db)
    if as_json:
        typer.echo(to_json(ranked))
    elif as_csv:
        typer.echo(helpful_csv(ranked, columns=HELPFUL_COLUMNS), nl=False)
    else:
        console.print(helpful_table(ranked, task=task))
