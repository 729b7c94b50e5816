"""`taskvec export`: a leaderboard composition as a loadable model folder with its recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from search.cli._options import EXPORT, DbOpt
from search.errors import SearchError

app = typer.Typer()

# Shared with `taskvec merge` (search/cli/models.py): both write a folder through search.export.
OUT_HELP = (
    "Folder to write: new or empty (an earlier export of the same model is rebuilt in place); anything "
    "else takes --force. Never inside a registered repo, the Hugging Face or vector cache, or a folder "
    "the merge reads."
)
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Write into a non-empty --out: an earlier export there is replaced (nothing stale is kept), "
        "files no export wrote (or changed since) are moved to OUT.kept beside it, never deleted. "
        "Without --force a non-empty --out is refused in one line.",
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
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="ORG/NAME",
            help="Then upload the folder to this Hub repo (created if missing; HF_TOKEN or `hf auth login`, "
            "HF_ENDPOINT apply).",
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="With --push-to-hub: create the repo private.")
    ] = False,
    db: DbOpt = EXPORT.db_url,
) -> None:
    """Export a leaderboard composition as a loadable model folder with its card and recipe.yaml."""
    from registry.db import require_database

    require_database(db)  # read-only here: a wrong --db is one line, never a new empty database
    # lazy: both import torch (`taskvec --help` must not)
    from search.export import check_target, export_trial, push_folder
    from search.leaderboard.queries import resolve_trial

    if private and push_to_hub is None:
        raise SearchError("export: --private goes with --push-to-hub ORG/NAME")
    if push_to_hub is not None:
        check_target(push_to_hub)  # a push that cannot happen is refused before the merge
    name, number = resolve_trial(study=study, trial=trial, task=task, rank=rank, db_url=db)
    folder = export_trial(study=name, trial=number, out=out, db_url=db, force=force, notify=note)
    typer.echo(f"exported: {folder}")
    if push_to_hub is not None:
        pushed = push_folder(folder=folder, repo_id=push_to_hub, private=private)
        typer.echo(
            f"pushed: {pushed.repo_url} (commit {pushed.commit[:12]}{', private' if pushed.private else ''})"
        )
