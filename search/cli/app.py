"""The root `taskvec` app: mounts each command group and turns errors into one line (`main`)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from registry import __version__
from registry import cli as registry_cli
from registry.constants import ENV_DEBUG
from registry.errors import TaskvecError
from search.cli import export, leaderboard, models, report, screen, search
from search.cli._render import err_console

app = typer.Typer(
    name="taskvec",
    help="Find T5 checkpoints whose task vectors improve a fine-tuned model, and search their compositions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for group in (models, screen, search, leaderboard, export, report):
    app.add_typer(group.app)
app.add_typer(registry_cli.app, name="registry")
app.add_typer(registry_cli.db_app, name="db")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskvec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    if debug:
        os.environ[ENV_DEBUG] = "1"


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    """Console entry point: run the app; a user-facing error prints as one line (`--debug`: traceback)."""
    try:
        code = app(standalone_mode=False)
        # Outside standalone mode typer turns Ctrl-C into Exit(130) and `typer.Exit(n)` into a returned
        # code instead of raising: honour both, or an interrupted search would exit 0.
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
    except TaskvecError as exc:
        if os.environ.get(ENV_DEBUG):
            raise
        _error(str(exc))
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
        _error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(1)
