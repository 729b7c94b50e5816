"""The `taskvec` command line: a light start-up, defaults that are their owners', `search --option`."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import optuna
import pytest
import typer
from typer.testing import CliRunner

import search.screen
import search.study
from search import leaderboard
from search.cli import app
from search.cli._options import Default
from search.study import SearchConfig
from tests.search_world import SEARCH_SIZE, recorded_calls, taskvec

HEAVY = ("torch", "transformers", "optuna", "sklearn", "datasets")


@pytest.mark.parametrize("args", [["--help"], ["registry", "--help"], ["db", "--help"]])
def test_help_and_model_free_commands_import_no_heavy_module(args):
    probe = (
        "import sys\n"
        f"sys.argv = ['taskvec', *{args!r}]\n"
        "from search.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_search_defaults_are_the_configs(monkeypatch):
    calls = recorded_calls(monkeypatch, search.study, "run_search")
    res = CliRunner().invoke(app, ["search", "--task", "sst2", "--target", "t"])
    assert res.exit_code == 0, res.output
    (config,), _ = calls[0]
    assert config == SearchConfig(task="sst2", target="t")


def test_search_option_becomes_method_options(monkeypatch):
    calls = recorded_calls(monkeypatch, search.study, "run_search")
    args = ["search", "--task", "sst2", "--target", "t", "--method", "dare", "--option", "p=0.5"]
    res = CliRunner().invoke(app, [*args, "--option", "seed=3", "--no-pruning", "--top-k", "2"])
    assert res.exit_code == 0, res.output
    (config,), _ = calls[0]
    assert (config.method, config.method_options) == ("dare", {"p": 0.5, "seed": 3})
    assert (config.pruning, config.top_k) == (False, 2)


def test_screen_defaults_are_the_functions(monkeypatch):
    calls = recorded_calls(monkeypatch, search.screen, "screen")
    res = CliRunner().invoke(app, ["screen", "--task", "sst2", "--target", "t"])
    assert res.exit_code == 0, res.output
    _, kwargs = calls[0]
    defaults = inspect.signature(search.screen.screen).parameters
    for name, value in kwargs.items():
        if name not in ("task", "target", "progress"):
            assert value == defaults[name].default, name


def test_every_default_names_a_parameter_of_its_owner():
    commands = typer.main.get_command(app).commands
    resolved = [
        (name, param.name, param.default())
        for name, command in commands.items()
        for param in command.params
        if isinstance(param.default, Default)
    ]
    assert {name for name, _, _ in resolved} >= {"finetune", "eval", "merge", "screen", "helpful", "search"}


# --- on the tiny zoo: this module's copy of the screened registry (`screened_db`, tests/conftest.py) ------


def _search(screened_db, *extra: str):
    return taskvec(
        "search", "--task", "sst2", "--target", "pico/t5-pico-sst2", "--data", str(screened_db.data),
        "--search-size", str(SEARCH_SIZE), "--top-k", "2", "--trials", "2", "--no-pruning",
        "--heldout-top", "0", "--db", screened_db.url, "--storage", screened_db.storage, *extra,
        home=screened_db.home,
    )  # fmt: skip


@pytest.mark.slow
def test_search_option_is_stored_with_the_study_and_its_rows(screened_db):
    out = _search(screened_db, "--method", "ties", "--option", "density=0.5", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    name = json.loads(out.stdout.splitlines()[-1])["study_name"]
    rows = leaderboard.query(db_url=screened_db.url, study=name)
    assert rows and all(r["method"] == "ties" and r["method_options"] == {"density": 0.5} for r in rows)
    study = optuna.load_study(study_name=name, storage=screened_db.storage)
    assert '"density": 0.5' in json.dumps(study.user_attrs)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("nope=1", "unknown option 'nope'"),
        ("density=2", "density must be in (0, 1]"),
        ("density", "KEY=VALUE"),
    ],
)
def test_bad_search_option_is_a_one_line_error(screened_db, option, message):
    out = _search(screened_db, "--method", "ties", "--option", option)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in out.stderr and len(errors) == 1 and message in errors[0], out.stderr


@pytest.mark.slow
def test_helpful_csv(screened_db):
    out = taskvec("helpful", "--task", "sst2", "--csv", "--db", screened_db.url, home=screened_db.home)
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.startswith("repo_id,revision,status,gain,") and lines
