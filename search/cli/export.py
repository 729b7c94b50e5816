"""`taskvec export`: a leaderboard composition as a loadable model folder with its recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli._options import EXPORT, DbOpt

app = typer.Typer()

# Shared with `taskvec merge` (search/cli/models.py): both write a folder through search.export.
OUT_HELP = (
    "Folder to write: new, empty, or an earlier export (its files are replaced, nothing stale is kept). "
    "Never inside a registered repo, the Hugging Face or vector cache, or a folder the merge reads."
)
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Write into an --out holding files no export wrote (or changed since): they are moved to "
        "OUT.kept beside it, never deleted. Without --force such an --out is refused, naming them.",
    ),
]


def note(message: str) -> None:
    """What an export moved aside: stderr, plain text (file names are never read as markup)."""
    typer.echo(message, err=True)


@app.command("export")
def export_command(
    *,
    out: Annotated[Path, typer.Option("--out", help=OUT_HELP)],
    study: Annotated[
        str | None,
        typer.Option("--study", help="STUDY or STUDY#TRIAL, as `taskvec leaderboard` shows it."),
    ] = None,
    trial: Annotated[
        int | None, typer.Option("--trial", help="Trial number (default: the best on search).")
    ] = EXPORT.trial,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Instead of --study: the task's best feasible row (see --rank)."),
    ] = None,
    rank: Annotated[
        int | None,
        typer.Option(
            "--rank", min=1, help="With --task: its N-th best row, as `leaderboard --top` ranks (1)."
        ),
    ] = None,
    force: ForceOpt = False,
    db: DbOpt = EXPORT.db_url,
) -> None:
    """Export a leaderboard composition as a loadable model folder with recipe.yaml."""
    from registry.db import require_database

    require_database(db)  # read-only here: a wrong --db is one line, never a new empty database
    # lazy: both import torch (`taskvec --help` must not)
    from search.export import export_trial
    from search.leaderboard.queries import resolve_trial

    name, number = resolve_trial(study=study, trial=trial, task=task, rank=rank, db_url=db)
    folder = export_trial(study=name, trial=number, out=out, db_url=db, force=force, notify=note)
    typer.echo(f"exported: {folder}")
