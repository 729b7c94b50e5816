"""`taskvec export`: a leaderboard composition as a loadable model folder with its recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli._options import EXPORT, DbOpt, StudyOpt

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
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", help=OUT_HELP)],
    trial: Annotated[
        int | None, typer.Option("--trial", help="Trial number (default: the best on search).")
    ] = EXPORT.trial,
    force: ForceOpt = False,
    db: DbOpt = EXPORT.db_url,
) -> None:
    """Export a leaderboard composition as a loadable model folder with recipe.yaml."""
    from search.export import export_trial  # lazy: imports torch (`taskvec --help` must not)

    folder = export_trial(study=study, trial=trial, out=out, db_url=db, force=force, notify=note)
    typer.echo(f"exported: {folder}")
