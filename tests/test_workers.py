"""`taskvec search --workers N`: worker processes sharing one study on a SQLite storage; the storage's locking.

The slow test runs the real command: two workers on CPU reach exactly the asked total of trials between
them, both doing trials, and a SIGINT to the parent stops both cleanly and a rerun resumes to the total.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from search.errors import SearchError
from search.study import SearchConfig, open_storage
from search.study.workers import check_shared_storage, worker_config, worker_devices
from tests.search_world import SEARCH_SIZE

N_TRIALS = 6
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _read_then_write(engine, *, barrier: threading.Barrier, seen: list, errors: list) -> None:
    """What Optuna does when it numbers a new trial: count the rows, then insert one, in one transaction."""
    try:
        with engine.begin() as conn:
            count = conn.execute(text("SELECT count(*) FROM t")).scalar_one()
            # Both readers inside their transactions at once (never reached together when serialised).
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=1.0)
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": count})
            seen.append(count)
    except OperationalError as exc:
        errors.append(str(exc))


def _race(engine) -> tuple[list, list]:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER)"))
        conn.execute(text("DELETE FROM t"))
    barrier, seen, errors = threading.Barrier(2), [], []
    threads = [
        threading.Thread(
            target=_read_then_write,
            args=(engine,),
            kwargs={"barrier": barrier, "seen": seen, "errors": errors},
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen, errors


def test_sqlite_storage_serialises_read_then_write_transactions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    # Without the scheme (pysqlite's deferred transactions) the two are not serialised: pysqlite runs the
    # read outside the transaction (both count 0, a lost update), or the two lock upgrades deadlock and
    # SQLite refuses one at once.
    plain = create_engine(url, connect_args={"timeout": 5, "check_same_thread": False})
    try:
        seen, errors = _race(plain)
    finally:
        plain.dispose()
    assert seen == [0, 0] or (errors and "locked" in errors[0]), (seen, errors)
    storage = open_storage(SearchConfig(task="sst2", target="t", storage=url))
    seen, errors = _race(storage.engine)
    # The storage's engine queues the second transaction behind the first: both succeed, in turn.
    assert errors == [] and sorted(seen) == [0, 1]


def test_worker_devices_and_configs() -> None:
    assert worker_devices(workers=None, devices="0,1,3") == ["cuda:0", "cuda:1", "cuda:3"]
    assert worker_devices(workers=2, devices="cuda:1, cpu") == ["cuda:1", "cpu"]
    assert worker_devices(workers=3, devices=None, device="cpu") == ["cpu"] * 3
    with pytest.raises(SearchError, match="one worker per device"):
        worker_devices(workers=3, devices="0,1")
    with pytest.raises(SearchError, match="--devices"):
        worker_devices(workers=None, devices=" , ")
    config = SearchConfig(task="sst2", target="t", heldout_top_n=3)
    assert worker_config(config, index=0, device=None).heldout_top_n == 3
    assert worker_config(config, index=1, device=None).heldout_top_n == 0  # worker 0 scores held-out
    with pytest.raises(SearchError, match="in-memory"):
        check_shared_storage(SearchConfig(task="sst2", target="t", storage="sqlite://"))


def _workers_of_rows(db: Path, study: str) -> dict[int, str]:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return dict(
                conn.execute("SELECT trial_number, worker FROM leaderboard WHERE study = ?", (study,))
            )
    except sqlite3.OperationalError:  # the table is not created yet
        return {}


@pytest.mark.slow
def test_two_workers_share_the_total_and_a_sigint_resumes(
    tiny_zoo: Path, screened_sst2, tmp_path: Path
) -> None:
    home = screened_sst2(tmp_path)  # this test's own copy: the workers write to it
    db, storage = tmp_path / "taskvec.db", f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [
        sys.executable, "-m", "search.cli", "search", "--task", "sst2", "--target", "pico/t5-pico-sst2",
        "--data", str(tiny_zoo / "glue"), "--search-size", str(SEARCH_SIZE), "--top-k", "2", "--no-pruning",
        "--heldout-top", "0", "--trials", str(N_TRIALS), "--study", "shared", "--db", home.url,
        "--storage", storage, "--heartbeat", "1", "--grace", "3", "--workers", "2",
    ]  # fmt: skip
    env = {**os.environ, "TASKVEC_HOME": str(tmp_path / "home")}
    with (tmp_path / "first.err").open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        # Both workers have written rows: they share the study at the same time.
        while len(set(_workers_of_rows(db, "shared").values())) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the workers wrote no rows in time"
            time.sleep(0.1)
        assert proc.poll() is None, "the search finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)  # to the parent only: it forwards the interrupt to its workers
        proc.wait(timeout=120)
    first_err = (tmp_path / "first.err").read_text()
    assert proc.returncode == 130, first_err[-2000:]
    assert "rerun the same command to resume" in first_err and "Traceback" not in first_err

    study = optuna.load_study(study_name="shared", storage=storage)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)), "a worker left its trial running"
    before = len(study.get_trials(states=FINISHED))
    assert before < N_TRIALS
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert set(_workers_of_rows(db, "shared")) == complete, "a completed trial has no row"

    rerun = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout)
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == N_TRIALS == summary["n_finished"]  # exactly the total: none lost, none extra
    assert summary["trials_here"] == N_TRIALS - before
    assert len({t.number for t in finished}) == N_TRIALS
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    rows = _workers_of_rows(db, "shared")
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert set(rows) == complete
    with sqlite3.connect(db) as conn:
        (dupes,) = conn.execute(
            "SELECT count(*) FROM (SELECT trial_number FROM leaderboard WHERE study = 'shared' "
            "GROUP BY trial_number HAVING count(*) > 1)"
        ).fetchone()
    assert dupes == 0
