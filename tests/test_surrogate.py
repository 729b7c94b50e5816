"""The surrogate (issue 13, item 4): screening's stored log-probs, the additive prediction, the proposer.

- Storage: a screening's per-example label log-probs (each lambda and the target's) come back exactly,
  and go with their screening row (the database's cascade with SQLite's foreign keys on, and the ORM's).
- The additive surrogate reproduces a screening's own score at a screened lambda of one candidate.
- A surrogate-assisted search on the tiny zoo records only exact scores, and each row its prediction.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pytest
from sqlalchemy import func, select, text

from registry.db import session_scope
from registry.pins import compatible_candidates, located, resolve_target
from search.leaderboard import write_report
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer, ScoreResult
from search.screen.store import save_screening, screened_candidates, screening_logprobs
from search.study import SearchConfig, run_search
from search.study.records import query
from search.study.space import coefficients_from_params
from search.study.surrogate import Grid, Surrogate, batch_scores, build_grid, propose
from search.tables import Screening, ScreeningLogprobs
from search.tasks.data import load_split
from search.tasks.glue import get_task
from search.vectors.compose import open_composer
from tests.search_world import SEARCH_SIZE

TASK, TARGET = "sst2", "pico/t5-pico-sst2"


def _result(logprobs: np.ndarray, positions: np.ndarray) -> ScoreResult:
    preds = logprobs.argmax(1).astype(np.int64)
    return ScoreResult(
        task=TASK,
        split="search",
        mode="rank",
        n=len(preds),
        score=0.0,
        metrics={"score": 0.0},
        predictions=preds,
        margins=np.zeros(len(preds)),
        fingerprint="fp",
        positions=positions,
        label_logprobs=logprobs.astype(np.float32),
    )


def _row(candidate: str, *, lambdas: list[dict]) -> dict:
    return {
        "task": TASK,
        "target_repo": "t",
        "target_revision": "trev",
        "candidate_repo": candidate,
        "candidate_revision": f"{candidate}-rev",
        "base_repo": "b",
        "base_revision": "brev",
        "lambdas": lambdas,
        "best_lambda": 0.5,
        "best_score": 1.0,
        "target_score": 0.0,
        "gain": 1.0,
        "split_fingerprint": "fp",
        "scorer": {},
        "worker": "w",
    }


def test_logprobs_round_trip_and_go_with_their_screening(synced_db):
    rng = np.random.default_rng(0)
    positions = rng.permutation(7)
    target = rng.normal(size=(7, 2))
    grids = {lam: rng.normal(size=(7, 2)) for lam in (0.2, 0.5)}
    for cand in ("a", "b"):
        tried = [
            {"lambda": lam, "score": 1.0, "n": 7, "result": _result(lp, positions)}
            for lam, lp in grids.items()
        ]
        save_screening(_row(cand, lambdas=tried), db_url=synced_db.url, target=_result(target, positions))
    stored = screening_logprobs(
        task=TASK, target_revision="trev", split_fingerprint="fp", db_url=synced_db.url
    )
    assert sorted(stored) == ["a-rev", "b-rev"]
    got = stored["a-rev"]
    assert [g.lam for g in got] == [0.0, 0.2, 0.5]
    for g, want in zip(got, [target, grids[0.2], grids[0.5]], strict=True):
        assert np.array_equal(g.positions, positions)
        assert np.array_equal(g.logprobs, want.astype(np.float32))
    # The JSON column keeps the grid, not the results.
    rows = screened_candidates(
        task=TASK, target_revision="trev", split_fingerprint="fp", db_url=synced_db.url
    )
    assert all("result" not in t for r in rows for t in r["lambdas"])

    def children() -> int:
        with session_scope(synced_db.url) as session:
            return session.execute(select(func.count()).select_from(ScreeningLogprobs)).scalar_one()

    assert children() == 6
    with session_scope(synced_db.url) as session:  # plain SQL: the database's own ON DELETE CASCADE
        session.execute(text("DELETE FROM screenings WHERE candidate_repo = 'a'"))
    assert children() == 3
    with session_scope(synced_db.url) as session:  # a session delete: the ORM's cascade
        session.delete(session.execute(select(Screening).where(Screening.candidate_repo == "b")).scalar_one())
    assert children() == 0


def test_batch_scores_are_the_task_metrics():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    preds = rng.integers(0, 2, (25, 40))
    preds[0] = 1  # a constant prediction: MCC undefined (0), F1 defined
    preds[1] = 0  # no positive prediction: F1 0
    for task in ("mrpc", "rte", "cola", "sst2"):
        want = [get_task(task).compute_metrics(labels, p)["score"] for p in preds]
        assert batch_scores(task, labels, preds) == pytest.approx(want, abs=1e-9)


def _toy_grid() -> Grid:
    """Two candidates on six examples, screened at 0.5 and 1.0 (lambda 0 is the target)."""
    rng = np.random.default_rng(2)
    target = rng.normal(size=(6, 2))
    lps = tuple(np.stack([target, rng.normal(size=(6, 2)), rng.normal(size=(6, 2))]) for _ in range(2))
    return Grid(
        task="rte",
        labels=rng.integers(0, 2, 6),
        label_ids=np.array([0, 1]),
        target=target,
        lambdas=(np.array([0.0, 0.5, 1.0]),) * 2,
        logprobs=lps,
    )


def test_additive_prediction_interpolates_adds_and_extrapolates():
    grid = _toy_grid()
    t, a, b = grid.target, grid.logprobs[0], grid.logprobs[1]
    assert np.allclose(grid.additive_logprobs(np.array([[0.0, 0.0]]))[0], t)
    assert np.allclose(grid.additive_logprobs(np.array([[0.5, 0.0]]))[0], a[1])
    assert np.allclose(grid.additive_logprobs(np.array([[0.25, 0.0]]))[0], (t + a[1]) / 2)
    assert np.allclose(grid.additive_logprobs(np.array([[1.5, 0.0]]))[0], a[2] + (a[2] - a[1]))
    assert np.allclose(grid.additive_logprobs(np.array([[0.5, 1.0]]))[0], t + (a[1] - t) + (b[2] - t))


def test_correction_and_proposal_learn_from_exact_trials():
    grid = _toy_grid()
    rng = np.random.default_rng(3)
    coefs = rng.uniform(0, 1, (12, 2))
    exact = grid.additive_scores(coefs) + 5.0  # a constant bias the additive model misses
    surrogate = Surrogate(grid=grid, lambda_max=1.0).fit(coefs, exact)
    mean, _ = surrogate.predict(coefs)
    assert np.abs(mean - exact).mean() < np.abs(grid.additive_scores(coefs) - exact).mean()
    pick, predicted = propose(surrogate, done=coefs, exact=exact, rng=rng, pool=64)
    assert pick.shape == (2,) and np.all((pick >= 0) & (pick <= 1.0)) and np.isfinite(predicted)
    assert np.abs(coefs - pick).max(axis=1).min() >= 1e-3  # never a composition already scored


def test_build_grid_needs_stored_logprobs():
    assert build_grid(task="rte", labels=np.zeros(3), screened=[[]]) is None


# --- on the tiny zoo -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_world(screened_db):
    split = load_split(TASK, split="search", data_dir=screened_db.data, size=SEARCH_SIZE)
    rows = screened_candidates(
        task=TASK,
        target_revision=resolve_target(TARGET, db_url=screened_db.url).target.revision,
        split_fingerprint=split.fingerprint,
        db_url=screened_db.url,
    )
    return split, rows


def test_additive_surrogate_is_the_screening_score_at_a_grid_lambda(screened_db, grid_world):
    split, rows = grid_world
    stored = screening_logprobs(
        task=TASK,
        target_revision=rows[0]["target_revision"],
        split_fingerprint=split.fingerprint,
        db_url=screened_db.url,
    )
    labels = split.examples["label"].to_numpy()
    checked = 0
    for row in rows:
        grid = build_grid(task=TASK, labels=labels, screened=[stored[row["candidate_revision"]]])
        assert grid is not None
        for tried in row["lambdas"]:
            assert grid.additive_scores(np.array([[tried["lambda"]]]))[0] == pytest.approx(
                tried["score"], abs=1e-9
            )
            checked += 1
        assert grid.additive_scores(np.array([[0.0]]))[0] == pytest.approx(row["target_score"], abs=1e-9)
    assert checked >= len(rows)


@pytest.mark.slow
def test_surrogate_search_records_exact_scores_and_each_rows_prediction(screened_db, tmp_path):
    config = SearchConfig(
        task=TASK,
        target=TARGET,
        data_dir=screened_db.data,
        top_k=4,
        n_trials=12,  # the warm start's 10 trials at most (top 4), then the surrogate's picks
        storage=screened_db.storage,
        db_url=screened_db.url,
        search_size=SEARCH_SIZE,
        vector_cache=screened_db.cache,
        heldout_top_n=0,
        pruning=False,
        surrogate=True,
    )
    summary = run_search(config, progress=False)
    assert summary.n_finished == 12
    study = optuna.load_study(study_name=summary.study_name, storage=config.storage)
    trials = {t.number: t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    rows = query(db_url=config.db_url, study=summary.study_name)
    assert len(rows) == len(trials) == 12
    for row in rows:
        trial = trials[row["trial_number"]]
        assert row["surrogate_score"] == pytest.approx(trial.user_attrs["surrogate_score"])
        assert row["score_search"] == pytest.approx(trial.value)  # the exact score, never the prediction
    # Some trials were the surrogate's picks (after the warm start), and their scores are still exact:
    # rescoring the best row's composition gives its stored score.
    assert any(t.user_attrs.get("proposed_by") == "surrogate" for t in trials.values())
    best = max(rows, key=lambda r: r["score_search"])
    assert best["score_search"] == pytest.approx(
        _rescore(screened_db, trials[best["trial_number"]], repos=summary.candidates)
    )
    # The report plots the predictions against the exact scores.
    index = write_report(
        study=summary.study_name, storage=config.storage, db_url=config.db_url, out=tmp_path / "report"
    )
    assert (tmp_path / "report" / "surrogate.png").is_file() and "surrogate.png" in index.read_text()
    # A study of its own: the surrogate proposes other trials than the plain search would.
    plain = replace(config, surrogate=False, n_trials=1)
    assert run_search(plain, progress=False).study_name != summary.study_name


def _rescore(home, trial, *, repos) -> float:
    resolved = resolve_target(TARGET, db_url=home.url)
    by_repo = {c.repo_id: c for c in compatible_candidates(resolved, db_url=home.url)}
    model, tok = load_seq2seq(resolved.target.path)
    composer = open_composer(
        model,
        target=resolved.target.path,
        base=resolved.base,
        ingredients=[located(by_repo[r]) for r in repos],
        cache_dir=home.cache,
    )
    composer.apply(coefficients_from_params(trial.params, list(repos)))
    split = load_split(TASK, split="search", data_dir=home.data, size=SEARCH_SIZE)
    return float(Scorer(model, tok, split).score().score)
