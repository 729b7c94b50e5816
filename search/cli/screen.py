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
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    SearchFromOpt,
    SearchSizeOpt,
    TargetOpt,
    TaskOpt,
)
from search.cli._render import (
    console,
    err_console,
    helpful_csv,
    helpful_table,
    screening_table,
    stream_summary,
    to_json,
)

app = typer.Typer()

MaxCachedOpt = Annotated[
    int | None,
    typer.Option(
        "--max-cached",
        min=1,
        help="Hub-scale: at most this many downloaded candidate snapshots on disk at once, each deleted after "
        "screening (never one already in your Hub cache); only the best --keep-vectors vectors stay cached.",
    ),
]
KeepVectorsOpt = Annotated[
    int,
    typer.Option("--keep-vectors", min=0, help="With --max-cached: the vectors of the best this many stay."),
]


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
    device: DeviceOpt = SCREEN.device,
    dtype: DtypeOpt = SCREEN.dtype,
    racing: Annotated[
        bool | None,
        typer.Option(
            "--racing/--no-racing",
            help="Race the candidates on growing prefixes of the search split, dropping those clearly "
            "behind the leaders (default: race when more than 32 are to be screened).",
            show_default=False,
        ),
    ] = None,
    race_keep: Annotated[
        int, typer.Option("--race-keep", min=1, help="Leaders a race never drops.")
    ] = SCREEN.race_keep,
    lambda_search: Annotated[
        str,
        typer.Option(
            "--lambda-search", help="coarse-to-fine (a few lambdas, then around the best) or grid (all)."
        ),
    ] = SCREEN.lambda_search,
    max_cached: MaxCachedOpt = SCREEN.max_cached,
    keep_vectors: KeepVectorsOpt = SCREEN.keep_vectors,
    as_json: JsonOpt = False,
    db: DbOpt = SCREEN.db_url,
    cache_dir: CacheDirOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Score theta_T + lambda * tau_i for every compatible candidate on the search split (resumable)."""
    from registry.constants import vector_cache_dir
    from search.screen import parse_lambdas, screen
    from search.screen.stream import StreamStats

    stats = None if max_cached is None else StreamStats()
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
        device=device,
        dtype=dtype,
        racing=racing,
        race_keep=race_keep,
        lambda_search=lambda_search,
        max_cached=max_cached,
        keep_vectors=keep_vectors,
        stream_stats=stats,
    )
    if as_json:
        typer.echo(to_json(rows))
    else:
        console.print(screening_table(rows, task=task, target=target))
    if stats is not None:  # on stderr beside JSON: stdout holds one JSON document
        (err_console if as_json else console).print(stream_summary(stats), soft_wrap=True)


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
