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

    from search.scoring import evaluate, iter_tasks

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
    from search.report import write_report

    index = write_report(study=study, storage=storage, db_url=db, out=out)
    typer.echo(f"report written: {index}")


def main() -> None:
    """Console entry point: run the app, turning user-facing errors into one line."""
    try:
        app(standalone_mode=False)
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
