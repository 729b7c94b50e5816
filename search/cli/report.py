"""`taskvec report`: a study's plots and an HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli._options import DbOpt, StorageOpt, StudyOpt

app = typer.Typer()


@app.command("report")
def report_command(
    *,
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNG plots and index.html.")],
    storage: StorageOpt = None,
    db: DbOpt = None,
) -> None:
    """Write a study's report: optimisation history, coefficient importance, per-candidate plots, HTML."""
    from registry.db import require_database

    require_database(db)  # read-only: never creates a database; checked before importing torch
    from search.leaderboard import write_report

    index = write_report(study=study, storage=storage, db_url=db, out=out)
    typer.echo(f"report written: {index}")
