"""Two `taskvec search` processes on one study, sharing one PostgreSQL database for Optuna and taskvec.

Needs a PostgreSQL server (`postgres_db`, tests/conftest.py): `TASKVEC_TEST_PG_URL` (set by `.ci/run`
through `.ci/postgres start`), else a `.ci/postgres` server that is up, else one the suite starts without
installing anything and stops when it ends; else the test skips saying so. Each run gets a database of its
own, dropped afterwards, so reruns start clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, text

from registry.sync import sync
from search import leaderboard
from search.screen import screen

ROOT = Path(__file__).resolve().parent.parent
TASK = "sst2"
TARGET = "pico/t5-pico-sst2"
TRIALS = 10
# Small splits keep the test short; the work-sharing logic does not depend on their size.
SEARCH_SIZE = 100
WORKER_TIMEOUT_S = 420


def _search_cmd(*, zoo: Path, url: str, study: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "search.cli",
        "search",
        "--task",
        TASK,
        "--target",
        TARGET,
        "--data",
        str(zoo),
        "--top-k",
        "3",
        "--trials",
        str(TRIALS),
        "--no-pruning",
        "--search-size",
        str(SEARCH_SIZE),
        "--heldout-top",
        "1",
        "--storage",
        url,
        "--db",
        url,
        "--study",
        study,
    ]


@pytest.mark.slow
def test_two_workers_share_one_study(tiny_zoo: Path, postgres_db: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "home"))  # vector cache of this test only
    sync(base="pico/t5-pico", source=str(tiny_zoo / "hub"), db_url=postgres_db, progress=False)
    screened = screen(
        task=TASK,
        target=TARGET,
        db_url=postgres_db,
        data_dir=tiny_zoo,
        lambdas=(0.5, 1.0),
        limit=3,
        search_size=SEARCH_SIZE,
        progress=False,
    )
    assert screened, "screening found no candidate on the tiny zoo"

    study = "multiworker"
    env = {**os.environ, "TASKVEC_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("TASKVEC_DB", None)
    procs = [
        subprocess.Popen(
            _search_cmd(zoo=tiny_zoo, url=postgres_db, study=study),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a search worker did not finish in time")
        outputs.append(out)
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]

    loaded = optuna.load_study(study_name=study, storage=postgres_db)
    states = Counter(t.state for t in loaded.trials)
    finished = [
        t
        for t in loaded.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    complete = {t.number for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE}
    # exactly the asked number finished: none lost, none extra; nothing left running
    assert len(finished) == TRIALS, states
    assert states[optuna.trial.TrialState.RUNNING] == 0, states

    rows = leaderboard.query(db_url=postgres_db, study=study)
    numbers = [r["trial_number"] for r in rows]
    assert len(numbers) == len(set(numbers)), "duplicate leaderboard rows"
    assert set(numbers) == complete, "leaderboard rows and completed trials differ"

    # both processes did work: two distinct workers in the trials and in the leaderboard
    trial_workers = {t.user_attrs.get("worker") for t in finished}
    assert len(trial_workers) == 2, trial_workers
    assert {r["worker"] for r in rows} == {
        t.user_attrs.get("worker") for t in loaded.trials if t.number in complete
    }
    assert len({r["worker"] for r in rows}) == 2

    # the database-level guarantee as well: no (study, trial_number) twice
    engine = create_engine(postgres_db)
    try:
        with engine.connect() as conn:
            dupes = conn.execute(
                text(
                    "SELECT trial_number, count(*) FROM leaderboard WHERE study = :s "
                    "GROUP BY trial_number HAVING count(*) > 1"
                ),
                {"s": study},
            ).all()
            tables = set(
                conn.execute(
                    text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
                ).scalars()
            )
    finally:
        engine.dispose()
    assert dupes == []
    # Optuna's Alembic version table and ours live side by side in one database
    assert {"alembic_version", "taskvec_alembic_version", "trials", "leaderboard", "checkpoints"} <= tables
