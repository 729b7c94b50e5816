"""Every failure the CLI reports is one plain line naming where and why (issue 16: F7 and the smaller ones).

Most cases run `main()` in-process: either on the real command line (checks that happen before any model
loads) or with the app replaced by a function raising a library's own exception (the safety net for
failures the loaders do not wrap yet).
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
import torch
from rich.console import Console
from safetensors.torch import load_file
from search_world import SEARCH_SIZE, screened_sst2_copy
from transformers import T5Config

from registry.db import dispose_engines
from registry.errors import ModelError
from search.cli import main
from search.cli._render import console, screening_table
from search.errors import DataError
from search.screen.run import parse_lambdas
from search.study import SearchConfig
from search.tasks.data import load_split
from search.vectors.composer import MAX_COEFFICIENT, check_coefficients

cli_app = importlib.import_module("search.cli.app")  # `search.cli.app` the attribute is the Typer app


@pytest.fixture(autouse=True)
def _home(monkeypatch, tmp_path):
    """Nothing a command might write lands outside the test's folder; errors print, never raise."""
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TASKVEC_DEBUG", raising=False)


def _main(argv: list[str], capsys) -> tuple[int, str]:
    """Run `taskvec ARGV` in-process: (exit code, stderr)."""
    old = sys.argv
    sys.argv = ["taskvec", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = old
    return exit_info.value.code, capsys.readouterr().err


def _failing(monkeypatch, capsys, fail) -> str:
    """Stderr of `main()` when the command raises whatever `fail()` raises; asserts one line, exit 1."""

    def app(**_):
        fail()

    monkeypatch.setattr(cli_app, "app", app)
    code, err = _main([], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- F7: messages and tables print literally ------------------------------------------------------------


def test_an_error_message_with_brackets_prints_literally(monkeypatch, capsys):
    def fail():
        raise ModelError("[red]org/name: coefficients must be finite, got [nan]")

    assert (
        _failing(monkeypatch, capsys, fail) == "error: [red]org/name: coefficients must be finite, got [nan]"
    )


def test_lambdas_nan_inf_name_the_value(capsys):
    code, err = _main(["screen", "--task", "sst2", "--target", "t", "--lambdas", "nan,inf"], capsys)
    assert code == 1
    assert err.strip() == "error: --lambdas 'nan,inf': coefficients must be finite numbers, got nan"


def test_a_table_shows_repo_names_literally():
    rows = [
        {
            "candidate_repo": "[red]org/name",
            "best_lambda": 0.5,
            "best_score": 61.2,
            "target_score": 60.0,
            "gain": 1.2,
            "lambdas": [{"lambda": 0.5}],
        }
    ]
    with console.capture() as captured:
        console.print(screening_table(rows, task="sst2", target="[bold]org/t:x:"))
    text = captured.get()
    assert "[red]org/name" in text and "[bold]org/t:x:" in text and "+1.20" in text


# --- coefficients: finite and within a bound, at parse time ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["screen", "--task", "sst2", "--target", "t", "--lambdas", "1e308"],
            "error: --lambdas '1e308': coefficient 1e+308 is out of range (at most 100 in absolute value)",
        ),
        (
            ["search", "--task", "sst2", "--target", "t", "--lambda-max", "1e308"],
            "error: --lambda-max: coefficient 1e+308 is out of range (at most 100 in absolute value)",
        ),
        (
            ["search", "--task", "sst2", "--target", "t", "--lambda-max", "nan"],
            "error: --lambda-max: coefficients must be finite numbers, got nan",
        ),
    ],
)
def test_huge_or_nan_coefficients_are_refused_in_one_line(argv, line, capsys):
    code, err = _main(argv, capsys)
    assert code == 1 and err.strip() == line


def test_check_coefficients_bounds():
    assert check_coefficients([0.5, -1, MAX_COEFFICIENT], what="x") == (0.5, -1.0, 100.0)
    assert parse_lambdas("0.1,0.2") == (0.1, 0.2)
    for bad in (float("inf"), -float("inf"), float("nan"), 100.5, -1e308):
        with pytest.raises(ModelError, match="^x: "):
            check_coefficients([0.1, bad], what="x")


# --- the safety net: library exceptions become one named line -------------------------------------------


def test_safetensors_error_names_the_file(monkeypatch, capsys, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    line = _failing(monkeypatch, capsys, lambda: load_file(str(path)))
    assert line.startswith(f"error: {path}: unreadable safetensors file (") and "header too small" in line


def test_unpickling_error_names_the_file_and_what_was_refused(monkeypatch, capsys, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": Evil()}, str(path))
    line = _failing(monkeypatch, capsys, lambda: torch.load(str(path), weights_only=True))
    assert line.startswith(f"error: {path}: refused to unpickle (")
    assert "system" in line and "Weights only load failed" not in line


def test_config_validation_error_names_the_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5", "d_model": "64"}')
    line = _failing(monkeypatch, capsys, lambda: T5Config.from_pretrained(str(tmp_path)))
    assert line.startswith(f"error: {tmp_path}: invalid value (") and "d_model" in line


def test_pydantic_validation_error_is_one_line(monkeypatch, capsys):
    import pydantic

    class Settings(pydantic.BaseModel):
        size: int

    line = _failing(monkeypatch, capsys, lambda: Settings(size="big"))
    assert line.startswith("error: invalid Settings (size: ") and "unexpected" not in line


def test_permission_error_names_the_file(monkeypatch, capsys, tmp_path):
    path = tmp_path / "taskvec.db"

    def fail():  # what open() raises on a file the user may not read (the tests run as root: simulated)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    assert _failing(monkeypatch, capsys, fail) == f"error: {path}: permission denied"


def test_overflow_error_is_named(monkeypatch, capsys):
    line = _failing(monkeypatch, capsys, lambda: float(10**400))
    assert line == "error: a number out of range (int too large to convert to float)"


def _readonly_insert(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t (x) VALUES (:x)"), {"x": 12345})


def test_sqlalchemy_error_shows_the_driver_line_and_database_never_the_sql(monkeypatch, capsys, tmp_path):
    path = tmp_path / "ro.db"
    line = _failing(monkeypatch, capsys, lambda: _readonly_insert(path))
    assert "database error: attempt to write a readonly database" in line and str(path) in line
    assert "INSERT" not in line and "12345" not in line and "[SQL" not in line


def test_a_known_cause_behind_a_wrapper_is_reported(monkeypatch, capsys, tmp_path):
    def fail():  # Optuna's RDB storage wraps SQLAlchemy's errors in its own
        try:
            _readonly_insert(tmp_path / "ro.db")
        except sa.exc.SQLAlchemyError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    assert "attempt to write a readonly database" in _failing(monkeypatch, capsys, fail)


def test_an_unknown_error_stays_unexpected_on_one_line(monkeypatch, capsys):
    def fail():
        raise ValueError("first\nsecond")

    line = _failing(monkeypatch, capsys, fail)
    assert line == "error: unexpected ValueError: first second (rerun with --debug for the traceback)"


def test_the_error_line_never_relies_on_the_console_to_skip_markup(monkeypatch):
    """The message goes out as text, not markup, even on a console that parses markup and emoji codes."""
    out = Console(force_terminal=True, width=200)
    monkeypatch.setattr(cli_app, "err_console", out)
    with out.capture() as captured:
        cli_app._error("got [nan] for [red]org/name :x:")
    assert "got [nan] for [red]org/name :x:" in captured.get()


# --- --search-size beyond the data ----------------------------------------------------------------------


def test_a_search_size_beyond_the_data_is_an_error(tiny_zoo):
    train = tiny_zoo / "glue" / "sst2" / "train-00000-of-00001.parquet"
    with pytest.raises(DataError) as info:
        load_split("sst2", split="search", data_dir=tiny_zoo / "glue", size=5000)
    assert str(info.value) == (
        f"sst2: a search split of 5000 examples was asked for, but {train} has only 800 rows "
        "(ask for at most 800)"
    )
    assert len(load_split("sst2", split="search", data_dir=tiny_zoo / "glue", size=800)) == 800


# --- a second Ctrl-C --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_repeated_ctrl_c_exits_quietly_with_130(tiny_zoo, tmp_path, tmp_path_factory):
    url = screened_sst2_copy(tiny_zoo, factory=tmp_path_factory, dest=tmp_path)
    dispose_engines()
    cmd = [
        sys.executable, "-m", "search.cli", "search", "--task", "sst2", "--target", "pico/t5-pico-sst2",
        "--data", str(tiny_zoo / "glue"), "--search-size", str(SEARCH_SIZE), "--top-k", "2",
        "--trials", "200", "--study", "interrupted", "--db", url,
        "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
    ]  # fmt: skip
    env = {**os.environ, "TASKVEC_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    storage = tmp_path / "optuna.db"
    while proc.poll() is None and time.monotonic() < deadline:  # until the first trial runs
        if storage.exists():
            with sqlite3.connect(storage, timeout=30) as conn:
                try:
                    if conn.execute("SELECT count(*) FROM trials").fetchone()[0] >= 1:
                        break
                except sqlite3.OperationalError:
                    pass
        time.sleep(0.1)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    # Ctrl-C, then more of them a moment apart until the process is gone: every moment of the exit
    # (cleanup, the summary, atexit callbacks) gets one.
    proc.send_signal(signal.SIGINT)
    while proc.poll() is None and time.monotonic() < deadline + 120:
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    assert "rerun the same command to resume" in err


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "ties", "method_options": {"nope": 1}}, "unknown option 'nope'"),
        ({"lambda_max": 1e308}, "lambda_max: coefficient 1e"),
    ],
)
def test_search_config_refuses_bad_options_before_any_model(options, match) -> None:
    """Python callers get the CLI's checks too: validate() runs before any model loads."""
    with pytest.raises(ModelError, match=match):
        SearchConfig(task="rte", target="unused", **options).validate()


def test_an_error_raised_by_a_ctrl_c_is_reported_as_the_ctrl_c(tmp_path, monkeypatch, capsys):
    """A Ctrl-C landing inside a native call (safetensors reading a tensor) can surface as that library's
    error; after a Ctrl-C, any error exits 130 with the resume line, never as a broken file."""
    app_module = importlib.import_module("search.cli.app")  # `search.cli.app` is also the Typer app

    missing = f"sqlite:///{tmp_path / 'none' / 'taskvec.db'}"
    monkeypatch.setattr(sys, "argv", ["taskvec", "leaderboard", "--db", missing])
    with pytest.raises(SystemExit) as plain:
        main()
    assert plain.value.code == 1 and "error:" in capsys.readouterr().err

    class _AfterCtrlC:  # what the SIGINT handler leaves behind once the first Ctrl-C came
        def clear(self) -> None: ...

        def set(self) -> None: ...

        def is_set(self) -> bool:
            return True

    monkeypatch.setattr(app_module, "_SIGINT_SEEN", _AfterCtrlC())
    try:
        with pytest.raises(SystemExit) as interrupted:
            main()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # an interrupted exit leaves it ignored
    err = capsys.readouterr().err
    assert interrupted.value.code == 130 and "rerun the same command to resume" in err and "error:" not in err
