"""The root `taskvec` app: mounts each command group and turns errors into one line (`main`)."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
from typing import Annotated

import typer
from rich.text import Text

from registry import __version__
from registry import cli as registry_cli
from registry.constants import ENV_DEBUG
from registry.errors import TaskvecError
from registry.progress import quiet_libraries_by_default
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
    # A Text, never markup: a message quotes user input ("[nan]", "[red]org/name") that rich would eat.
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _looks_like_path(text: object) -> bool:
    return isinstance(text, str) and 0 < len(text) < 4096 and "\n" not in text and os.sep in text


def _path_in_traceback(exc: BaseException) -> str | None:
    """The innermost file or folder a frame of `exc`'s traceback was working on (a local naming one).

    Libraries (safetensors, torch's unpickler, transformers' config classes) do not say which file they
    failed on; the caller's frame that opened it still holds its path.
    """
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        for value in frame.f_locals.values():
            text = os.fspath(value) if isinstance(value, os.PathLike | str) else None
            if _looks_like_path(text) and os.path.exists(text):
                return text
    return None


def _database_in_traceback(exc: BaseException) -> str | None:
    """The (redacted) URL of the database a SQLAlchemy error came from, read off its frames."""
    from sqlalchemy.engine import Connection, Engine  # already imported: the error came from it

    from registry.db import redact_url

    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        obj = frame.f_locals.get("self")
        engine = obj.engine if isinstance(obj, Connection) else obj if isinstance(obj, Engine) else None
        if engine is not None:
            return redact_url(engine.url.render_as_string(hide_password=False))
    return None


def _unpickling_reason(text: str) -> str:
    """torch's weights-only refusal is a page of advice; its one line of substance names what was refused."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines[1:]:
        if "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:")[-1].strip()
        elif line.startswith(("Please file an issue", "Check the documentation")):
            continue
        if line:
            return line
    return lines[0] if lines else "malformed pickle"


def _library_reason(exc: BaseException) -> tuple[str, str | None] | None:
    """(reason, where) for a known failure class raised by a library, or None for an unknown one.

    Only modules already imported are consulted: an exception cannot be of a class never loaded, and
    `taskvec --help` must not pay for importing them.
    """
    mods = sys.modules
    if isinstance(exc, OSError):
        # Only the file the OS named: network errors are OSErrors too, and their frames hold unrelated paths.
        where = None if exc.filename is None else os.fspath(exc.filename)
        reason = exc.strerror or _one_line(str(exc)) or type(exc).__name__
        return (reason.lower() if isinstance(exc, PermissionError) else reason), where
    if isinstance(exc, OverflowError):
        return f"a number out of range ({_one_line(str(exc))})", _path_in_traceback(exc)
    if "sqlalchemy" in mods and isinstance(exc, mods["sqlalchemy"].exc.SQLAlchemyError):
        # Never the statement or its parameters (str(exc) carries both): the driver's own first line.
        orig = getattr(exc, "orig", None)
        text = str(orig if orig is not None else exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        return f"database error: {reason}", _database_in_traceback(exc)
    if "safetensors" in mods and isinstance(exc, mods["safetensors"].SafetensorError):
        return f"unreadable safetensors file ({_one_line(str(exc))})", _path_in_traceback(exc)
    if isinstance(exc, pickle.UnpicklingError):
        reason = f"refused to unpickle ({_unpickling_reason(str(exc))})"
        return reason, _path_in_traceback(exc)
    if "pydantic" in mods and isinstance(exc, mods["pydantic"].ValidationError):
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid {exc.title} ({errors})", _path_in_traceback(exc)
    hub_errors = mods.get("huggingface_hub.errors")
    hub_validation = tuple(
        getattr(hub_errors, name)
        for name in ("HFValidationError", "StrictDataclassError")
        if hub_errors is not None and hasattr(hub_errors, name)
    )
    if hub_validation and isinstance(exc, hub_validation):
        return f"invalid value ({_one_line(str(exc))})", _path_in_traceback(exc)
    return None


def describe(exc: BaseException) -> str:
    """One line for a failure that escaped as a library's exception: where it happened and why.

    A known class (or one raised `from` a known class, as Optuna wraps SQLAlchemy's) names its file,
    folder or database and the reason; anything else is a bug and says so.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        known = _library_reason(seen)
        if known is not None:
            reason, where = known
            return f"{where}: {reason}" if where else reason
        seen = seen.__cause__
    return f"unexpected {type(exc).__name__}: {_one_line(str(exc))} (rerun with --debug for the traceback)"


def _interrupted(signum: int, frame: object) -> None:
    """SIGINT: the first raises KeyboardInterrupt; any later one is ignored while the command unwinds.

    A second Ctrl-C would otherwise break the cleanup that saves completed work, or land in an atexit
    callback and print "Exception ignored in atexit callback ... KeyboardInterrupt".
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _SIGINT_SEEN.set()
    if isinstance(sys.exc_info()[1], KeyboardInterrupt):
        return  # already unwinding from a Ctrl-C that another handler (the search's gate) raised
    raise KeyboardInterrupt


# Set by the first Ctrl-C. A KeyboardInterrupt raised while a native extension runs (safetensors reading a
# tensor) can come back as that library's own error ("could not determine the shape ..."), which would
# then be reported as a broken file: an error after a Ctrl-C is the Ctrl-C.
_SIGINT_SEEN = threading.Event()


def _run() -> int:
    """Run the app; the exit code, with a user-facing error printed as one line (`--debug`: raised)."""
    try:
        code = app(standalone_mode=False)
        # Outside standalone mode typer turns Ctrl-C into Exit(130) and `typer.Exit(n)` into a returned
        # code instead of raising: honour both, or an interrupted search would exit 0.
        if code == 130:
            raise KeyboardInterrupt
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except KeyboardInterrupt:
        return _interrupted_exit()
    except TaskvecError as exc:
        if _SIGINT_SEEN.is_set():
            return _interrupted_exit()
        if os.environ.get(ENV_DEBUG):
            raise
        _error(str(exc))
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except typer.TyperException as exc:  # usage errors: typer shows them with the command's help hint
        exc.show()
        return exc.exit_code
    except Exception as exc:
        if _SIGINT_SEEN.is_set():
            return _interrupted_exit()
        if os.environ.get(ENV_DEBUG):
            raise
        _error(describe(exc))
        return 1


def _interrupted_exit() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting now: a second Ctrl-C must not interrupt it
    err_console.print("interrupted: completed work is saved; rerun the same command to resume")
    return 130


def main() -> None:
    """Console entry point: run the app and exit with its code (Ctrl-C: 130, quietly, once)."""
    quiet_libraries_by_default()  # before any command imports huggingface_hub or transformers
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupted) if in_main_thread else None
    _SIGINT_SEEN.clear()
    code = 1
    try:
        code = _run()
    finally:
        if previous is not None and code != 130:
            signal.signal(signal.SIGINT, previous)  # an in-process caller (tests) gets its Ctrl-C back
    sys.exit(code)
