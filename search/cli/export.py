"""`taskvec export`: a leaderboard composition as a loadable model folder with its recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli._options import EXPORT, DbOpt, StudyOpt

app = typer.Typer()


@app.command("export")
def export_command(
    *,
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged model and its recipe.")],
    trial: Annotated[
        int | None, typer.Option("--trial", help="Trial number (default: the best on search).")
    ] = EXPORT.trial,
    db: DbOpt = EXPORT.db_url,
) -> None:
    """Export a leaderboard composition as a loadable model folder with recipe.yaml."""
    from search.export import export_trial

    folder = export_trial(study=study, trial=trial, out=out, db_url=db)
    typer.echo(f"exported: {folder}")
