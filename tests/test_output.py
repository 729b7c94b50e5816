"""Results on stdout, progress on stderr: `taskvec screen > file` holds the table and nothing else.

The bars are rich's, drawn on stderr by `registry.progress.progress_bar`; transformers' "Loading weights"
bar and the Hub's download bars are silenced; the screen and search bars show the time remaining.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from registry.db import upgrade
from registry.progress import (
    ENV_HUB_BARS_OFF,
    ENV_TRANSFORMERS_VERBOSITY,
    counted_columns,
    progress_bar,
    quiet_libraries_by_default,
)
from tests.search_world import taskvec

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR_LINE = re.compile(r"\d+/\d+ +\d+:\d\d:\d\d")  # done/total then elapsed: a progress line, never a result
LIBRARY_BAR = "Loading weights"


def _terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subprocess's rich consoles behave as on a terminal (bars drawn live), as for a user who pipes
    stdout to a file and watches stderr."""
    monkeypatch.setenv("FORCE_COLOR", "1")


def _plain(text: str) -> str:
    return ANSI.sub("", text)


def test_progress_bar_draws_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(*counted_columns("unit-of-work", eta=True)) as bar:
        job = bar.add_task("x", total=2)
        bar.advance(job, 2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "unit-of-work" in err and "2/2" in err and "eta" in err


def test_disabled_progress_bar_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(*counted_columns("unit-of-work"), enabled=False) as bar:
        bar.advance(bar.add_task("x", total=1))
    assert capsys.readouterr() == ("", "")


def test_every_stage_draws_its_bars_through_the_shared_helper() -> None:
    """A `Progress(...)` built elsewhere would draw on rich's default console: stdout."""
    direct = [
        str(path.relative_to(ROOT))
        for package in ("registry", "search", "benchmarks")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "registry" / "progress.py" and re.search(r"\bProgress\(", path.read_text())
    ]
    assert direct == []


def test_leaderboard_imports_no_model_library(tmp_path: Path) -> None:
    """`taskvec leaderboard` needs no model: it must not pay for torch, transformers or scikit-learn."""
    url = f"sqlite:///{tmp_path / 'taskvec.db'}"
    upgrade(url)
    probe = (
        "import sys\n"
        f"sys.argv = ['taskvec', 'leaderboard', '--json', '--db', {url!r}]\n"
        "from search.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_library_quieting_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # set, then delete: monkeypatch restores the variables as they were before the test
    monkeypatch.setenv(ENV_HUB_BARS_OFF, "unset")
    monkeypatch.delenv(ENV_HUB_BARS_OFF)
    monkeypatch.setenv(ENV_TRANSFORMERS_VERBOSITY, "info")
    quiet_libraries_by_default()
    assert os.environ[ENV_HUB_BARS_OFF] == "1"
    assert os.environ[ENV_TRANSFORMERS_VERBOSITY] == "info"


@pytest.mark.slow
def test_screen_prints_results_on_stdout_and_progress_on_stderr(
    synced_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _terminal(monkeypatch)
    res = taskvec(
        "screen", "--task", "sst2", "--target", "pico/t5-pico-sst2", "--data", str(synced_db.data),
        "--db", synced_db.url, "--lambdas", "0.5", "--limit", "1", "--search-size", "40",
        home=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out, err = _plain(res.stdout), _plain(res.stderr)
    assert "screening sst2" in out and "gain" in out  # the table
    footnote = "SST-2: accuracy ×100; all on the search split = a stratified sample of GLUE train"
    assert footnote in " ".join(out.split())  # every score named: metric and split
    assert "screen sst2:" not in out and "eta" not in out and not BAR_LINE.search(out)
    assert "screen sst2:" in err and "━" in err and BAR_LINE.search(err)
    assert re.search(r"eta \d+:\d\d:\d\d", err)  # time remaining, beside the elapsed time
    assert LIBRARY_BAR not in out + err


@pytest.mark.slow
def test_eval_prints_results_on_stdout_and_progress_on_stderr(
    tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _terminal(monkeypatch)
    model = tiny_zoo / "hub" / "pico" / "t5-pico-sst2"
    res = taskvec(
        "eval", "--model", str(model), "--task", "sst2", "--data", str(tiny_zoo / "glue"), "--size", "20",
        home=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out, err = _plain(res.stdout), _plain(res.stderr)
    assert "sst2" in out and "accuracy" in out  # the table
    assert "scoring" not in out and LIBRARY_BAR not in out
    assert "scoring sst2 (heldout, rank)" in err
    assert LIBRARY_BAR not in err
