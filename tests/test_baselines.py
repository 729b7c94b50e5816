"""The obvious baselines beside a search's result, and small searches that still search (tiny zoo)."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from search.cli import app
from search.leaderboard import write_report
from search.screen import helpful_for
from search.study import BASELINE_NAMES, SearchConfig, run_search, stored_context, study_baselines
from search.study.baselines import load_baselines, save_baselines
from search.study.records import query, study_best
from search.study.space import warm_start
from tests.search_world import SEARCH_SIZE

TASK, TARGET = "sst2", "pico/t5-pico-sst2"


@pytest.fixture(scope="module")
def config(screened_db) -> SearchConfig:
    return SearchConfig(
        task=TASK,
        target=TARGET,
        data_dir=screened_db.data,
        top_k=3,
        n_trials=16,
        storage=screened_db.storage,
        db_url=screened_db.url,
        search_size=SEARCH_SIZE,
        vector_cache=screened_db.cache,
    )


@pytest.fixture(scope="module")
def searched(config):
    return run_search(config, progress=False)


@pytest.fixture(scope="module")
def baselines(config, searched):
    return study_baselines(config)


@pytest.mark.slow
def test_baseline_rows_are_what_they_say(screened_db, config, searched, baselines):
    assert [b.name for b in baselines.rows] == list(BASELINE_NAMES)
    by = {b.name: b for b in baselines.rows}
    # The target: nothing added, its scores the search's own target scores, gain exactly 0.
    assert by["target"].coefficients == {}
    assert by["target"].objective_search == pytest.approx(searched.target_score_search)
    assert by["target"].objective_heldout == pytest.approx(searched.target_score_heldout)
    assert (by["target"].gain_ci["lo"], by["target"].gain_ci["hi"]) == (0.0, 0.0)
    # Best single: screening's top candidate at its screened lambda, scoring what screening measured.
    screened = {h["repo_id"]: h for h in helpful_for(TASK, db_url=screened_db.url)}
    context = _context(config, searched)
    top = max(context.candidates, key=lambda c: c.gain)
    assert by["best-single"].coefficients == {top.repo_id: pytest.approx(top.best_lambda)}
    assert by["best-single"].objective_search == pytest.approx(screened[top.repo_id]["best_score"])
    # Add-all: every ingredient at its own screened lambda.
    assert by["add-all"].coefficients == {c.repo_id: pytest.approx(c.best_lambda) for c in context.candidates}
    # Global lambda: one coefficient for all, the best of its grid on the search split.
    assert len(set(by["global-lambda"].coefficients.values())) == 1
    assert len(by["global-lambda"].coefficients) == len(context.candidates)
    # Search-best: the leaderboard's best feasible row, rescored to the same numbers.
    best = study_best(study=searched.study_name, db_url=screened_db.url)
    assert by["search-best"].trial == best["trial_number"]
    assert by["search-best"].objective_search == pytest.approx(best["score_search"])
    assert by["search-best"].objective_heldout == pytest.approx(best["score_heldout"])
    # Selection on the search split: the search's best is at least every baseline its warm start enqueues
    # (the best single and add-all, so at least the target). Not the global lambda: its grid is not
    # enqueued, and on an AMD EPYC's tiny zoo it came out above a 16-trial search's best there.
    for name in ("target", "best-single", "add-all"):
        assert by["search-best"].objective_search >= by[name].objective_search - 1e-9, name
    for b in baselines.rows:
        ci = b.gain_ci
        assert ci["lo"] <= b.objective_heldout - by["target"].objective_heldout <= ci["hi"]
    assert baselines.best_vs_single_ci is not None


@pytest.mark.slow
def test_baselines_are_stored_and_read_back(screened_db, baselines):
    save_baselines(baselines, task=TASK, db_url=screened_db.url)
    save_baselines(baselines, task=TASK, db_url=screened_db.url)  # idempotent: replaced, not doubled
    loaded = load_baselines(study=baselines.study, db_url=screened_db.url)
    assert loaded == baselines


@pytest.mark.slow
def test_a_small_search_is_not_its_warm_start(screened_db, config, searched):
    """16 trials: the best row is no baseline the warm start enqueues (the best single, add-all, one
    uniform lambda), and the sampler's own trials are not all stopped on a prefix.

    The warm start's pairs (the best single with each next candidate, one of the two at half its lambda)
    are search proposals, not baselines: one of them may be the best."""
    context = _context(config, searched)
    warm = warm_start(context.candidates, lambda_max=context.lambda_max)
    pairs = [
        i for i, p in enumerate(warm) if i >= 2 and sum(k.startswith("use:") and v for k, v in p.items()) == 2
    ]
    assert len(pairs) == 2 * (len(context.candidates) - 1)
    best = study_best(study=searched.study_name, db_url=screened_db.url)
    baseline_trials = [i for i in range(len(warm)) if i not in pairs]
    assert best["trial_number"] not in baseline_trials, (best, baseline_trials)
    study = optuna.load_study(study_name=searched.study_name, storage=config.storage)
    sampled = [t for t in study.trials if t.number >= len(warm)]
    assert len(sampled) == 16 - len(warm)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in sampled), [t.state for t in sampled]
    rows = query(db_url=screened_db.url, study=searched.study_name)
    assert searched.n_finished == 16 and len(rows) == searched.n_complete


@pytest.mark.slow
def test_search_stores_its_baselines_and_the_cli_and_report_show_them(
    screened_db, config, searched, tmp_path
):
    stored = load_baselines(study=searched.study_name, db_url=screened_db.url)  # run_search stored them
    assert stored is not None and [b.name for b in stored.rows] == list(BASELINE_NAMES)
    db = ["--db", screened_db.url]
    res = CliRunner().invoke(app, ["leaderboard", "--baselines", "--study", searched.study_name, *db])
    assert res.exit_code == 0, res.output
    for label in ("target alone", "best single", "add every", "global λ", "search's best", "95%"):
        assert label in res.output
    res = CliRunner().invoke(app, ["leaderboard", "--baselines", "--task", TASK, "--json", *db])
    assert res.exit_code == 0, res.output
    (loaded,) = [b for b in json.loads(res.output) if b["study"] == searched.study_name]
    assert loaded == stored.as_dict()
    res = CliRunner().invoke(app, ["leaderboard", "--baselines", "--task", "mrpc", *db])
    assert res.exit_code == 1  # no mrpc study: one line, not an empty table
    page = write_report(
        study=searched.study_name, storage=config.storage, db_url=screened_db.url, out=tmp_path
    )
    assert "Baselines" in page.read_text() and "global-lambda" in page.read_text()


def _context(config: SearchConfig, searched):
    study = optuna.load_study(study_name=searched.study_name, storage=config.storage)
    return stored_context(study)
