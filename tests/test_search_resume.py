"""A search (single- or multi-task) killed with SIGKILL mid-run resumes to the asked number of trials, losing
no completed trial."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta

import optuna
import pytest

from search.study import SearchConfig, fail_unbeaten_trials, open_storage
from tests.search_world import SEARCH_SIZE

N_TRIALS = 16


def _rows(db_path) -> list[int]:
    try:
        with sqlite3.connect(db_path, timeout=30) as conn:
            return [n for (n,) in conn.execute("SELECT trial_number FROM leaderboard WHERE study = 'killed'")]
    except sqlite3.OperationalError:  # table not created yet
        return []


# What is searched: one task (screened candidates), or two at once from the base (their references).
SEARCHES = {
    # Without pruning every trial completes: on a pruned sst2 study the first rows can land only at its end.
    "single-task": ("--task", "sst2", "--target", "pico/t5-pico-sst2", "--top-k", "4", "--no-pruning"),
    "multi-task": (
        "--tasks", "sst2,mrpc", "--target", "pico/t5-pico", "--objective", "normalized-mean",
        "--reference", "mrpc=pico/t5-pico-mrpc", "--top-k", "3",
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("what", list(SEARCHES))
def test_sigkill_then_rerun_completes_without_loss_or_duplicates(what, tiny_zoo, screened_sst2, tmp_path):
    db_path, storage_path = tmp_path / "taskvec.db", tmp_path / "optuna.db"
    url = screened_sst2(tmp_path).url  # this test's own copy: the searches write to it
    cmd = [
        sys.executable, "-m", "search.cli", "search", *SEARCHES[what],
        "--data", str(tiny_zoo / "glue"), "--search-size", str(SEARCH_SIZE),
        "--trials", str(N_TRIALS), "--study", "killed", "--db", url, "--storage", f"sqlite:///{storage_path}",
        "--heartbeat", "1", "--grace", "3",
    ]  # fmt: skip
    env = {**os.environ, "TASKVEC_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_rows(db_path)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the search finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = set(_rows(db_path))
    assert len(before) >= 2

    storage = f"sqlite:///{storage_path}"
    study = optuna.load_study(study_name="killed", storage=storage)
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(study.get_trials(states=finished_states)) < N_TRIALS
    running_at_kill = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))}

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]

    study = optuna.load_study(study_name="killed", storage=storage)
    assert len(study.get_trials(states=finished_states)) == N_TRIALS
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    after = _rows(db_path)
    assert len(after) == len(set(after)), "duplicate leaderboard rows"
    assert set(after) == complete, "a completed trial is missing from the leaderboard (or a row has no trial)"
    assert before <= set(after), "a row written before the kill was lost"
    # The trial in flight at the kill was declared dead by heartbeat and retried with the same parameters:
    # every one it had drawn (a kill can land between two suggestions, so the retry may hold more: the rest
    # of an enqueued trial's fixed parameters, which Optuna's retry carries over).
    failed = {t.number: t for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {
            optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t
            for t in study.get_trials()
        }
    for number in running_at_kill:
        assert number in failed
        assert number in retried and failed[number].params.items() <= retried[number].params.items()


@pytest.mark.slow
def test_ctrl_c_exits_130_with_completed_trials_saved(tiny_zoo, screened_sst2, tmp_path):
    db_path, storage = tmp_path / "taskvec.db", f"sqlite:///{tmp_path / 'optuna.db'}"
    url = screened_sst2(tmp_path).url  # this test's own copy: the search writes to it
    cmd = [
        sys.executable, "-m", "search.cli", "search", "--task", "sst2", "--target", "pico/t5-pico-sst2",
        "--data", str(tiny_zoo / "glue"), "--search-size", str(SEARCH_SIZE), "--top-k", "4",
        "--trials", "200", "--study", "killed", "--db", url, "--storage", storage,
    ]  # fmt: skip
    env = {**os.environ, "TASKVEC_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(_rows(db_path)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "rerun the same command to resume" in err and "Traceback" not in err
    study = optuna.load_study(study_name="killed", storage=storage)
    # The trial in flight is marked failed at once (no stale RUNNING trial); every completed one has its row.
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert sorted(_rows(db_path)) == sorted(complete)


def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    """Optuna's stale check skips trials that never beat; a resuming worker must not wait on one for ever."""
    config = SearchConfig(task="sst2", target="t", storage=f"sqlite:///{tmp_path / 'o.db'}", grace_period=5)
    study = optuna.create_study(study_name="s", storage=open_storage(config), direction="maximize")
    dists = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def running(started):
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, params={"x": 0.5}, distributions=dists
        ), started

    storage = study._storage
    ids = []
    for started in (datetime.now() - timedelta(seconds=60), datetime.now()):  # dead, and just created
        template, start = running(started)
        template.datetime_start = start
        ids.append(storage.create_new_trial(study._study_id, template_trial=template))

    assert fail_unbeaten_trials(study, grace_s=5) == [0]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[0] == optuna.trial.TrialState.FAIL and states[1] == optuna.trial.TrialState.RUNNING
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = [
            t
            for t in study.get_trials()
            if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0
        ]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.WAITING
    assert retried[0].params == {"x": 0.5}
    assert fail_unbeaten_trials(study, grace_s=5) == []  # idempotent
