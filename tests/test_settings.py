"""Remembered settings: `--config run.yaml`, TASKVEC_DATA / TASKVEC_STORAGE / --cache-dir, the study's identity
(seed, candidates used), the data source its screenings were made on, and a Hub that is not there."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

import search.screen
import search.study
from registry.constants import ENV_DATA, ENV_HOME, ENV_STORAGE, vector_cache_dir
from registry.errors import RegistryError
from registry.sources.hub import HubSource
from search.cli import app
from search.errors import SearchError
from search.study import SearchConfig, default_storage, default_study_name, run_search, select_candidates
from search.study.context import stored_config
from search.study.storage import check_storage_url, open_storage
from tests.search_world import SEARCH_SIZE, recorded_calls

RUN_YAML = """\
task: sst2
target: pico/t5-pico-sst2
search-size: 200
top-k: 3
search:
  seed: 2
  trials: 7
  option: [density=0.5]
screen:
  lambdas: [0.2, 0.5]
"""


@pytest.fixture()
def run_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(RUN_YAML)
    return path


# --- --config ----------------------------------------------------------------------------------------------


def test_config_file_sets_options_and_flags_override_it(monkeypatch, run_yaml):
    monkeypatch.delenv(ENV_DATA, raising=False)
    calls = recorded_calls(monkeypatch, search.study, "run_search")
    res = CliRunner().invoke(app, ["search", "--config", str(run_yaml), "--trials", "9"])
    assert res.exit_code == 0, res.output
    (config,), _ = calls[0]
    expected = SearchConfig(task="sst2", target="pico/t5-pico-sst2", search_size=200, top_k=3, seed=2)
    assert config == replace(expected, n_trials=9, method_options={"density": 0.5})  # the flag won


def test_one_file_serves_screen_with_its_own_section(monkeypatch, run_yaml):
    calls = recorded_calls(monkeypatch, search.screen, "screen")
    res = CliRunner().invoke(app, ["screen", "--config", str(run_yaml)])
    assert res.exit_code == 0, res.output
    _, kwargs = calls[0]
    # Top-level keys screen has (task, target, search-size) and its section; search's keys are not its.
    assert (kwargs["task"], kwargs["search_size"], kwargs["lambdas"]) == ("sst2", 200, (0.2, 0.5))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: sst2\ntopk: 3\n", "unknown key 'topk'"),
        ("task: sst2\nsearch:\n  lambdas: 0.1\n", "unknown key 'search.lambdas' for taskvec search"),
        ("task: sst2\nsearch:\n  top-k: lots\n", "search.top-k: Input should be a valid integer"),
        ("task: sst2\ntop-k: 0\n", "top-k: Input should be greater than or equal to 1"),
        ("task: sst2\ntop-k: 2\ntop_k: 3\n", "'top_k' repeats 'top-k'"),
        ("- task\n", "a mapping of option: value"),
        ("task: [open\n", "not valid YAML at line 2"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file_and_key(monkeypatch, tmp_path, text, message):
    recorded_calls(monkeypatch, search.study, "run_search")
    path = tmp_path / "run.yaml"
    path.write_text(text)
    res = CliRunner().invoke(app, ["search", "--config", str(path), "--target", "t"])
    assert isinstance(res.exception, SearchError), res.output
    line = str(res.exception)
    assert line.startswith(f"{path}: ") and message in line and "\n" not in line


def test_taskvec_data_is_the_default_data_and_a_flag_beats_it(monkeypatch, tmp_path):
    calls = recorded_calls(monkeypatch, search.study, "run_search")
    monkeypatch.setenv(ENV_DATA, str(tmp_path / "glue"))
    base = ["search", "--task", "sst2", "--target", "t"]
    assert CliRunner().invoke(app, base).exit_code == 0
    assert CliRunner().invoke(app, [*base, "--data", str(tmp_path / "other")]).exit_code == 0
    assert [c[0][0].data_dir for c in calls] == [tmp_path / "glue", tmp_path / "other"]


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("search.screen", "screen", ["screen", "--task", "sst2", "--target", "t"]),
        ("search.scoring.evaluate", "evaluate", ["eval", "--model", "m", "--task", "sst2"]),
        ("search.finetune", "finetune", ["finetune", "--base", "b", "--task", "sst2", "--out", "o"]),
    ],
)
def test_every_command_reading_glue_defaults_to_taskvec_data(monkeypatch, tmp_path, module, name, args):
    calls = recorded_calls(monkeypatch, importlib.import_module(module), name)
    monkeypatch.setenv(ENV_DATA, str(tmp_path / "glue"))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    _, kwargs = calls[0]
    assert kwargs["data_dir"] == tmp_path / "glue"


def test_cache_dir_and_home_decide_where_vectors_go(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "home"))
    assert vector_cache_dir() == tmp_path / "home" / "vectors"
    assert vector_cache_dir(tmp_path / "c") == tmp_path / "c" / "vectors"
    calls = recorded_calls(monkeypatch, search.study, "run_search")
    args = ["search", "--task", "sst2", "--target", "t", "--cache-dir", str(tmp_path / "c")]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert calls[0][0][0].vector_cache == tmp_path / "c" / "vectors"


def test_taskvec_storage_is_the_default_storage(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_HOME, str(tmp_path))
    monkeypatch.delenv(ENV_STORAGE, raising=False)
    assert default_storage() == f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setenv(ENV_STORAGE, "sqlite:///elsewhere.db")
    assert default_storage() == "sqlite:///elsewhere.db"


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("postgres://u:pw@h/db", "did you mean postgresql:// or postgresql+psycopg://?"),
        ("postgresql+nodriver://h/db", "did you mean postgresql:// or postgresql+psycopg://?"),
        ("sqlite3:///x.db", "did you mean sqlite:///path/to/optuna.db?"),
    ],
)
def test_a_storage_url_with_an_unknown_driver_suggests_the_scheme(url, hint):
    with pytest.raises(SearchError) as info:
        open_storage(SearchConfig(task="sst2", target="t", storage=url))
    line = str(info.value)
    assert "unknown storage driver" in line and hint in line and "pw" not in line and "\n" not in line
    check_storage_url("sqlite:///fine.db")  # a known driver passes


# --- the study's identity ----------------------------------------------------------------------------------


def test_seed_and_candidates_used_name_the_study_and_old_names_stay():
    config = SearchConfig(task="sst2", target="pico/t5-pico-sst2")
    # The name HEAD gave this command before seeds or candidate counts were in names (seed 0, --top-k 16).
    assert default_study_name(config, target_revision="ab" * 20) == (
        "sst2-t5-pico-sst2@abababab-task_arithmetic-k16-tpe-5d4b4d"
    )
    seeded = default_study_name(replace(config, seed=1), target_revision="ab" * 20)
    assert seeded != default_study_name(config, target_revision="ab" * 20)
    used = default_study_name(config, target_revision="ab" * 20, n_candidates=3)
    assert "-k3-" in used and "-k16-" not in used


def test_min_gain_is_the_candidate_rule():
    rows = [
        {"candidate_repo": f"o/{name}", "gain": gain, "best_lambda": 0.5}
        for name, gain in [("a", 0.5), ("b", 2.0), ("c", -1.0), ("d", 1.0)]
    ]
    assert [r["candidate_repo"] for r in select_candidates(rows, top_k=16)] == ["o/b", "o/d", "o/a"]
    assert [r["candidate_repo"] for r in select_candidates(rows, top_k=16, min_gain=0.7)] == ["o/b", "o/d"]
    # None passes: the K best anyway (as before --min-gain).
    assert [r["candidate_repo"] for r in select_candidates(rows, top_k=2, min_gain=5)] == ["o/b", "o/d"]


# --- a Hub that is not there -------------------------------------------------------------------------------


class _CountingListener:
    """A loopback socket that accepts connections, counts them and closes each at once (a broken Hub).

    Counting connections is the test of "no retries": a retry is another connection, whatever the
    machine's speed, where a timing bound would be either loose or flaky.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def broken_hub():
    listener = _CountingListener()
    yield listener
    listener.close()


def _closed_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


def test_hub_source_on_an_unreachable_hub_is_one_line_without_retries(broken_hub):
    refused = HubSource(endpoint=_closed_port())
    with pytest.raises(RegistryError, match="cannot be reached") as info:
        refused.repo_info("org/model")
    assert "\n" not in str(info.value) and refused.retries == 0
    dropped = HubSource(endpoint=broken_hub.url)
    with pytest.raises(RegistryError, match="cannot be reached"):
        dropped.repo_info("org/model")
    assert broken_hub.accepted == 1 and dropped.retries == 0  # one connection: no retry


_LOAD = (
    "from search.tasks.data import load_split\n"
    "try:\n    load_split('sst2', split='search', hub_dataset='taskvec-test/no-such-glue')\n"
    "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
)


@pytest.mark.parametrize("offline", [False, True])
def test_glue_from_an_unreachable_or_offline_hub_is_one_line_without_retries(broken_hub, tmp_path, offline):
    # A subprocess: huggingface_hub and datasets read HF_ENDPOINT and HF_HUB_OFFLINE when imported.
    env = {**os.environ, "HF_ENDPOINT": broken_hub.url, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    out = subprocess.run([sys.executable, "-c", _LOAD], capture_output=True, text=True, env=env, timeout=120)
    line = out.stdout.strip()
    assert line.startswith("DataError taskvec-test/no-such-glue (sst2, train): cannot load from the Hub"), out
    assert "--data DIR" in line and len(out.stdout.strip().splitlines()) == 1
    if offline:
        assert "HF_HUB_OFFLINE is set" in line and broken_hub.accepted == 0  # not even one request
    else:
        assert "cannot be reached" in line and broken_hub.accepted == 1  # one probe, no retry


# --- on the tiny zoo: this module's copy of the screened registry (`screened_db`, tests/conftest.py) --------


@pytest.mark.slow
def test_search_remembers_its_data_seed_and_settings(screened_db, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ENV_DATA, raising=False)
    config = SearchConfig(
        task="sst2",
        target="pico/t5-pico-sst2",
        n_trials=2,
        pruning=False,
        heldout_top_n=0,
        search_size=SEARCH_SIZE,
        storage=screened_db.storage,
        db_url=screened_db.url,
        vector_cache=screened_db.cache,
    )
    first = run_search(config, progress=False)  # no data given: the screenings' folder, not the Hub
    err = capsys.readouterr().err
    assert f"data: {screened_db.data} (where sst2 on pico/t5-pico-sst2 was screened)" in err
    study = optuna.load_study(study_name=first.study_name, storage=screened_db.storage)
    record = stored_config(study)
    used = record["n_candidates"]  # the candidates with a positive gain: fewer than --top-k 16
    assert 0 < used < config.top_k == 16 and len(first.candidates) == used
    assert f"using {used} of " in err and " screened candidates (gain > 0 on the search split)" in err
    assert f"-k{used}-" in first.study_name  # the name counts them, not the --top-k asked for
    assert record["data_dir"] == str(screened_db.data) and record["seed"] == 0

    # The stored settings print as a config file, which reads back as the same search.
    res = CliRunner().invoke(
        app, ["leaderboard", "--study", first.study_name, "--config", "--storage", screened_db.storage]
    )
    assert res.exit_code == 0, res.output
    printed = yaml.safe_load(res.stdout)["search"]
    assert printed["data"] == str(screened_db.data) and printed["top-k"] == 16 and printed["seed"] == 0
    printed_file = tmp_path / "printed.yaml"
    printed_file.write_text(res.stdout)
    calls = recorded_calls(
        monkeypatch, search.study, "run_search"
    )  # the CLI's; this module's stays the real one
    assert CliRunner().invoke(app, ["search", "--config", str(printed_file)]).exit_code == 0
    again = calls[0][0][0]
    assert (
        again.data_dir,
        again.top_k,
        again.n_trials,
        again.pruning,
        again.search_size,
        again.study_name,
    ) == (screened_db.data, 16, 2, False, SEARCH_SIZE, first.study_name)

    # Another seed is another study; with --study it joins the named one and says so.
    seeded = run_search(replace(config, seed=1, n_trials=1), progress=False)
    assert seeded.study_name != first.study_name and seeded.n_finished == 1
    capsys.readouterr()
    joined = run_search(replace(config, seed=1, study_name=first.study_name), progress=False)
    assert joined.study_name == first.study_name and joined.trials_here == 0
    err = capsys.readouterr().err
    assert f"joining the existing study {first.study_name}" in err and "created with --seed 0" in err

    # Another data source than the screenings' is refused in one line, before any data loads.
    with pytest.raises(SearchError) as info:
        run_search(replace(config, data_dir=tmp_path / "glue"), progress=False)
    line = str(info.value)
    assert f"was screened on {screened_db.data}, not on this data" in line and "\n" not in line
