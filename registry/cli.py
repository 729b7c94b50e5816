"""`taskvec registry ...` and `taskvec db ...`: thin wrappers over registry functions.

`taskvec --help` imports this module, so only typer and rich are imported at the top: the commands import
`registry.sync`/`registry.db` (SQLAlchemy, Alembic, huggingface_hub: ~0.6 s) when they run.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from registry.errors import RegistryError

app = typer.Typer(
    help="Index compatible T5 checkpoints from the Hub or a local folder.", no_args_is_help=True
)
db_app = typer.Typer(help="The taskvec database (schema migrations).", no_args_is_help=True)

# No markup or emoji codes: repo ids, reasons and errors are the user's text ("[red]org/name" would lose
# its "[red]"); styling is a `Text`.
console = Console(markup=False, emoji=False)

DB_OPTION = typer.Option(
    None, "--db", help="SQLAlchemy URL (default: TASKVEC_DB, else SQLite under TASKVEC_HOME)."
)


@app.command("sync")
def sync_cmd(
    base: str = typer.Option(..., "--base", help="Base model: a repo id in the source, or a folder."),
    source: str = typer.Option(
        "hub", "--source", help="'hub' (HF_ENDPOINT/HF_TOKEN apply) or a folder of org/name repos."
    ),
    search: str | None = typer.Option(None, "--search", help="Only repo ids containing this string."),
    filters: list[str] = typer.Option(
        [], "--filter", help="Hub tag filter, repeatable (e.g. base_model:finetune:ORG/NAME)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Check at most this many repos."),
    verify_weights: bool = typer.Option(
        True,
        "--verify-weights/--metadata-only",
        help="Fetch and scan the weights of repos passing the metadata checks.",
    ),
    verify_pickles: bool = typer.Option(
        False,
        "--verify-pickles",
        help="Download pickle-only repos and check them (weights_only=True loading).",
    ),
    recheck: bool = typer.Option(False, "--recheck", help="Check again repos whose revision did not change."),
    db: str | None = DB_OPTION,
) -> None:
    """Check every repo of a source against a base; rerun to resume or to pick up new revisions."""
    # lazy: SQLAlchemy, Alembic and huggingface_hub stay out of `taskvec --help` (module docstring)
    from registry.compat import STATUS_BY_CODE
    from registry.sync import sync

    if source == "hub" and not (search or filters or limit):
        raise RegistryError(
            "refusing to crawl the whole Hub: pass --filter (e.g. t5, base_model:finetune:ORG/NAME), --search or --limit"
        )
    summary = sync(
        base=base,
        source=source,
        search=search,
        filters=tuple(filters),
        limit=limit,
        db_url=db,
        verify_weights=verify_weights,
        verify_pickles=verify_pickles,
        recheck=recheck,
    )
    table = Table(
        title=f"registry: {summary.base_repo_id}@{summary.base_revision[:12]} from {summary.source}"
    )
    table.add_column("verdict")
    table.add_column("repos", justify="right")
    table.add_row(Text("compatible", style="green"), str(summary.by_status.get("compatible", 0)))
    for code, count in sorted(
        summary.by_reason.items(), key=lambda item: (STATUS_BY_CODE.get(item[0], ""), item[0])
    ):
        table.add_row(f"{STATUS_BY_CODE.get(code, 'rejected')}: {code}", str(count))
    table.add_row("unreachable (retried next run)", str(len(summary.errors)))
    console.print(table)
    console.print(
        f"checked {summary.checked}, unchanged {summary.skipped}, read {summary.bytes_read / 1e6:.2f} MB",
        highlight=False,
    )
    for error in summary.errors:
        console.print(Text.assemble(("unreachable:", "yellow"), " ", error), highlight=False, soft_wrap=True)


@app.command("list")
def list_cmd(
    status: str | None = typer.Option(
        None, "--status", help="compatible | incompatible | unverified | broken"
    ),
    base: str | None = typer.Option(
        None, "--base", help="Only checkpoints checked against this base repo id."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list of objects)."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV."),
    db: str | None = DB_OPTION,
) -> None:
    """List checked repos with their status and reason."""
    # lazy: see the module docstring
    from registry.db import require_database
    from registry.sync import format_rows, list_checkpoints

    require_database(db)  # a read-only command: a missing database is an error, never created
    rows = list_checkpoints(db_url=db, status=status, base=base)
    if as_json or as_csv:
        typer.echo(format_rows(rows, fmt="json" if as_json else "csv"), nl=False)
        if as_json:
            typer.echo()
        return
    table = Table()
    table.add_column("repo", no_wrap=True)
    table.add_column("revision", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("reason", ratio=1)
    table.add_column("distance", justify="right", no_wrap=True)
    for row in rows:
        distance = row["lineage_distance"]
        table.add_row(
            row["repo_id"],
            row["revision"][:8],
            row["status"],
            row["reason"] or "",
            f"{distance:.3f}" if distance is not None else "",
        )
    console.print(table)


@app.command("show")
def show_cmd(repo: str = typer.Argument(..., help="Repo id."), db: str | None = DB_OPTION) -> None:
    """Everything recorded about one repo (one entry per base it was checked against)."""
    # lazy: see the module docstring
    from registry.db import require_database
    from registry.sync import show_checkpoint

    require_database(db)  # a read-only command: a missing database is an error, never created
    typer.echo(json.dumps(show_checkpoint(repo, db_url=db), indent=2, default=str))


@db_app.command("upgrade")
def upgrade_cmd(
    db: str | None = DB_OPTION,
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Repair a half-created database (tables with rows, no schema version): record its revision.",
    ),
) -> None:
    """Migrate the database to the newest schema (fresh databases are migrated automatically)."""
    from registry.db import upgrade  # lazy: see the module docstring

    revisions = upgrade(db, repair=repair)
    typer.echo(f"database at revision {', '.join(revisions)}")
