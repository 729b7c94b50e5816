"""Gains with their uncertainty: the paired bootstrap interval of a held-out gain (invariant 6), its storage
on the leaderboard (migration 0004), and what `leaderboard` and `search` print about it."""

from __future__ import annotations

import json
from pathlib import Path

import alembic.command
import numpy as np
import pytest
from sqlalchemy import MetaData, create_engine, insert, inspect, select
from typer.testing import CliRunner

from registry.db import alembic_config, dispose_engines, get_engine, session_scope
from search.cli import app
from search.cli._render import search_summary
from search.errors import SearchError
from search.leaderboard import recompute_interval, summary
from search.scoring.bootstrap import (
    GainInterval,
    decode_labels,
    encode_labels,
    paired_bootstrap,
    paired_bootstrap_objective,
    resampled_scores,
    verdict,
)
from search.scoring.scorer import ScoreResult
from search.study import records
from search.study.objectives import combine
from search.tables import LeaderboardRow
from search.tasks.glue import INVALID_LABEL, get_task
from tests.search_world import SEARCH_SIZE, leaderboard_row, taskvec

# --- the bootstrap on hand-made predictions ------------------------------------------------------------


def _draw(rng: np.random.Generator, n: int, *, p_a: float, p_b: float) -> tuple[np.ndarray, ...]:
    """Labels and two models' predictions: each right with its own probability, independently."""
    labels = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < p_a, labels, 1 - labels)
    b = np.where(rng.random(n) < p_b, labels, 1 - labels)
    return labels, a, b


@pytest.mark.parametrize("task", ["mrpc", "cola", "rte", "sst2"])
def test_identical_predictions_give_exactly_zero(task):
    labels, a, _ = _draw(np.random.default_rng(0), 150, p_a=0.7, p_b=0.7)
    ci = paired_bootstrap(labels=labels, preds_a=a, preds_b=a.copy(), task=task)
    assert (ci.gain, ci.lo, ci.hi) == (0.0, 0.0, 0.0)
    assert ci.resamples == 2000 and ci.level == 0.95 and ci.n == {task: 150}
    assert verdict(ci.to_dict()) == "no significant gain" and not ci.significant


@pytest.mark.parametrize("task", ["rte", "sst2"])
def test_all_correct_against_all_wrong_is_the_known_gain_at_both_ends(task):
    labels = np.random.default_rng(1).integers(0, 2, 80)
    wrong = np.where(np.arange(80) % 2 == 0, 1 - labels, INVALID_LABEL)  # unparseable counts as wrong too
    ci = paired_bootstrap(labels=labels, preds_a=labels, preds_b=wrong, task=task)
    assert (ci.gain, ci.lo, ci.hi) == (100.0, 100.0, 100.0)
    assert verdict(ci.to_dict()) == "significant gain"
    flipped = paired_bootstrap(labels=labels, preds_a=wrong, preds_b=labels, task=task)
    assert (flipped.lo, flipped.hi) == (-100.0, -100.0) and verdict(flipped.to_dict()) == "significant loss"


def test_seeded_and_deterministic():
    labels, a, b = _draw(np.random.default_rng(2), 200, p_a=0.75, p_b=0.7)
    one = paired_bootstrap(labels=labels, preds_a=a, preds_b=b, task="mrpc", seed=7)
    assert one == paired_bootstrap(labels=labels, preds_a=a, preds_b=b, task="mrpc", seed=7)
    assert one != paired_bootstrap(labels=labels, preds_a=a, preds_b=b, task="mrpc", seed=8)
    assert one.lo < one.gain < one.hi
    assert GainInterval.from_dict(json.loads(json.dumps(one.to_dict()))) == one


def test_about_95_percent_coverage_over_simulated_draws():
    # 200 datasets where each model is right with a known probability: the true gain is 100 * (0.75 - 0.7).
    rng = np.random.default_rng(12)
    true_gain = 100 * (0.75 - 0.70)
    covered = 0
    for k in range(200):
        labels, a, b = _draw(rng, 200, p_a=0.75, p_b=0.70)
        ci = paired_bootstrap(labels=labels, preds_a=a, preds_b=b, task="rte", resamples=1000, seed=k)
        covered += ci.lo <= true_gain <= ci.hi
    assert 0.90 <= covered / 200 <= 0.99, covered


@pytest.mark.parametrize("task", ["mrpc", "cola", "rte", "mnli"])
def test_the_metric_is_recomputed_per_resample_as_compute_metrics_does(task):
    spec = get_task(task)
    rng = np.random.default_rng(3)
    n_labels = len(spec.label_ids)
    for n in (1, 2, 5, 40):  # tiny resamples are often degenerate: one class only (MCC 0, F1 0)
        labels = rng.integers(0, n_labels, n)
        preds = rng.integers(-1, n_labels, n)  # -1: unparseable generations
        idx = rng.integers(0, n, size=(30, n))
        got = resampled_scores(task=task, labels=labels, predictions=preds, indices=idx)
        want = [spec.compute_metrics(labels[i], preds[i])["score"] for i in idx]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("task", ["mrpc", "cola"])
def test_one_resample_interval_is_compute_metrics_on_that_resample(task):
    spec = get_task(task)
    labels, a, b = _draw(np.random.default_rng(4), 60, p_a=0.8, p_b=0.6)
    a[:3] = INVALID_LABEL
    ci = paired_bootstrap(labels=labels, preds_a=a, preds_b=b, task=task, resamples=1, seed=5)
    idx = np.random.default_rng(5).integers(0, 60, size=(1, 60))[0]  # the one resample it drew
    diff = (
        spec.compute_metrics(labels[idx], a[idx])["score"]
        - spec.compute_metrics(labels[idx], b[idx])["score"]
    )
    assert ci.lo == pytest.approx(diff, abs=1e-9) and ci.hi == pytest.approx(diff, abs=1e-9)
    full = spec.compute_metrics(labels, a)["score"] - spec.compute_metrics(labels, b)["score"]
    assert ci.gain == full


def test_multi_task_objective_resamples_each_task_and_keeps_references_fixed():
    rng = np.random.default_rng(6)
    tasks = {"mrpc": 120, "cola": 90, "rte": 70}
    drawn = {t: _draw(rng, n, p_a=0.8, p_b=0.7) for t, n in tasks.items()}
    labels = {t: d[0] for t, d in drawn.items()}
    a, b = {t: d[1] for t, d in drawn.items()}, {t: d[2] for t, d in drawn.items()}
    refs = {"mrpc": 80.0, "cola": 40.0, "rte": 70.0}
    for objective in ("mean", "normalized-mean"):
        ci = paired_bootstrap_objective(
            labels=labels, preds_a=a, preds_b=b, objective=objective, references=refs
        )
        score = {
            side: combine(
                {t: get_task(t).compute_metrics(labels[t], p[t])["score"] for t in tasks},
                kind=objective,
                references=refs,
            )
            for side, p in (("a", a), ("b", b))
        }
        assert ci.gain == pytest.approx(score["a"] - score["b"], abs=1e-9)
        assert ci.lo < ci.gain < ci.hi and ci.n == tasks
    same = paired_bootstrap_objective(
        labels=labels, preds_a=a, preds_b=a, objective="normalized-mean", references=refs
    )
    assert (same.lo, same.hi) == (0.0, 0.0)
    with pytest.raises(SearchError, match="positive fine-tuned reference"):
        paired_bootstrap_objective(
            labels=labels, preds_a=a, preds_b=b, objective="normalized-mean", references={}
        )


def test_mismatched_predictions_are_refused():
    with pytest.raises(SearchError, match="same examples"):
        paired_bootstrap(labels=[0, 1, 1], preds_a=[0, 1], preds_b=[0, 1, 1], task="rte")


def test_label_strings_round_trip():
    values = np.array([0, 1, INVALID_LABEL, 2, 1])
    assert encode_labels(values) == "01-21"
    np.testing.assert_array_equal(decode_labels("01-21"), values)


# --- storage: migration 0004, the row's predictions and interval -----------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_0004_keeps_the_rows_of_an_existing_database(tmp_path, request, dialect):
    url = (
        f"sqlite:///{tmp_path / 'old.db'}" if dialect == "sqlite" else request.getfixturevalue("postgres_db")
    )
    engine = create_engine(url)
    row = leaderboard_row("old", 0, 61.0)
    with engine.begin() as conn:  # a database as taskvec at schema 0003 left it, with a row
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "0003")
        meta = MetaData()
        meta.reflect(conn, only=["leaderboard"])
        assert "gain_ci" not in meta.tables["leaderboard"].columns
        conn.execute(insert(meta.tables["leaderboard"]).values(**row, feasible=True))
    engine.dispose()
    columns = {c["name"] for c in inspect(get_engine(url)).get_columns("leaderboard")}  # migrates to head
    assert {"gain_ci", "heldout_predictions"} <= columns
    (kept,) = records.query(db_url=url)
    assert (kept["study"], kept["score_search"], kept["gain_ci"]) == ("old", 61.0, None)
    assert records.stored_predictions(study="old", trial=0, db_url=url) is None
    assert recompute_interval(study="old", trial=0, db_url=url) is None
    dispose_engines()


def _result(task: str, labels: np.ndarray, preds: np.ndarray, order: np.ndarray) -> ScoreResult:
    """A held-out pass as a scorer returns it: examples in its permuted order."""
    metrics = get_task(task).compute_metrics(labels[order], preds[order])
    return ScoreResult(
        task=task, split="heldout", mode="rank", n=len(order), score=metrics["score"], metrics=metrics,
        predictions=preds[order], margins=np.zeros(len(order)), fingerprint="h" * 64,
        labels=labels[order], positions=order,
    )  # fmt: skip


@pytest.fixture()
def scored_db(tmp_path):
    """A leaderboard whose best rte row was scored on held-out against the target (60 held-out examples)."""
    url = f"sqlite:///{tmp_path / 'taskvec.db'}"
    labels, row_preds, target_preds = _draw(np.random.default_rng(9), 60, p_a=0.9, p_b=0.55)
    order = np.random.default_rng(0).permutation(60)
    target = {"rte": _result("rte", labels, target_preds, order)}
    row = leaderboard_row("s", 0, 70.0)
    row["target_score_heldout"] = target["rte"].score
    records.upsert_rows([row, leaderboard_row("s", 1, 65.0)], db_url=url)
    results = {"rte": _result("rte", labels, row_preds, order)}
    (best, _) = records.query(db_url=url)
    records.write_heldout(best, results, objective=results["rte"].score, db_url=url, target=target)
    yield url, labels, row_preds, target_preds
    dispose_engines()


def test_write_heldout_stores_predictions_in_split_order_and_the_interval(scored_db):
    url, labels, row_preds, target_preds = scored_db
    stored = records.stored_predictions(study="s", trial=0, db_url=url)
    assert stored["tasks"]["rte"] == {
        "fingerprint": "h" * 64,
        "labels": encode_labels(labels),
        "row": encode_labels(row_preds),
        "target": encode_labels(target_preds),
    }
    best = records.query(db_url=url)[0]
    want = paired_bootstrap(labels=labels, preds_a=row_preds, preds_b=target_preds, task="rte")
    assert best["gain_ci"] == want.to_dict() and best["gain_ci"]["gain"] == pytest.approx(
        best["gain_heldout"]
    )
    again = recompute_interval(study="s", trial=0, db_url=url)
    assert again == want  # recomputed from what the row stores, nothing rescored
    assert recompute_interval(study="s", trial=0, db_url=url, level=0.99).lo < want.lo
    records.upsert_rows([leaderboard_row("s", 0, 70.0)], db_url=url)  # a re-written trial keeps them
    assert records.query(db_url=url)[0]["gain_ci"] == want.to_dict()
    with session_scope(url) as session:  # deleted with its row: they are the row's own columns
        session.delete(
            session.execute(select(LeaderboardRow).where(LeaderboardRow.trial_number == 0)).scalar_one()
        )
    assert records.stored_predictions(study="s", trial=0, db_url=url) is None


def test_leaderboard_shows_the_gain_with_its_interval_within_100_columns(scored_db):
    url, *_ = scored_db
    ci = records.query(db_url=url)[0]["gain_ci"]
    (best,) = summary(db_url=url)
    assert best["gain_ci"] == ci and best["verdict"] == "significant gain"
    res = CliRunner().invoke(app, ["leaderboard", "--db", url], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    cell = f"{ci['gain']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]"
    assert cell in res.output and "gain [lo, hi]" in res.output
    assert max(len(line) for line in res.output.splitlines() if "│" in line) <= 100
    assert f"rte: held-out gain {cell} (95% paired bootstrap, 2000 resamples): significant gain" in res.output
    as_json = CliRunner().invoke(app, ["leaderboard", "--db", url, "--json"])
    rows = json.loads(as_json.output)
    assert rows[0]["gain_ci"] == ci and rows[1]["gain_ci"] is None
    assert "heldout_predictions" not in rows[0]  # stored for recomputation, not printed


def test_no_significant_gain_is_said_where_the_interval_contains_zero(tmp_path):
    url = f"sqlite:///{tmp_path / 'taskvec.db'}"
    labels, a, b = _draw(np.random.default_rng(10), 40, p_a=0.7, p_b=0.68)
    order = np.arange(40)
    records.upsert_rows([leaderboard_row("s", 0, 70.0)], db_url=url)
    (row,) = records.query(db_url=url)
    results, target = {"rte": _result("rte", labels, a, order)}, {"rte": _result("rte", labels, b, order)}
    records.write_heldout(row, results, objective=results["rte"].score, db_url=url, target=target)
    (best,) = summary(db_url=url)
    assert best["gain_ci"]["lo"] < 0 < best["gain_ci"]["hi"] and best["verdict"] == "no significant gain"
    res = CliRunner().invoke(app, ["leaderboard", "--db", url], env={"COLUMNS": "100"})
    assert ": no significant gain" in res.output
    dispose_engines()


# --- end to end on the tiny zoo: a search scores its best row, --refresh the next ------------------------


@pytest.fixture(scope="module")
def searched(screened_db):
    out = taskvec(
        "search", "--task", "sst2", "--target", "pico/t5-pico-sst2", "--data", str(screened_db.data),
        "--search-size", str(SEARCH_SIZE), "--top-k", "2", "--trials", "3", "--no-pruning",
        "--heldout-top", "1", "--db", screened_db.url, "--storage", screened_db.storage,
        home=screened_db.home,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return screened_db, out.stdout


@pytest.mark.slow
def test_a_searched_row_gets_its_interval_in_json_table_and_summary(searched):
    db, search_out = searched
    board = taskvec("leaderboard", "--task", "sst2", "--json", "--db", db.url, home=db.home)
    rows = json.loads(board.stdout)
    best = rows[0]
    ci = best["gain_ci"]
    assert ci is not None and ci["resamples"] >= 1000 and ci["level"] == 0.95
    assert ci["gain"] == pytest.approx(best["score_heldout"] - best["target_score_heldout"], abs=1e-9)
    assert ci["lo"] <= ci["gain"] <= ci["hi"]
    assert f"held-out gain {ci['gain']:+.2f} [{ci['lo']:+.2f}, {ci['hi']:+.2f}]: {verdict(ci)}" in search_out
    table = taskvec("leaderboard", "--task", "sst2", "--db", db.url, home=db.home)
    assert f"[{ci['lo']:+.2f}, {ci['hi']:+.2f}]" in table.stdout and verdict(ci) in table.stdout
    assert rows[1]["gain_ci"] is None
    elsewhere = Path(db.home) / "elsewhere"  # --cache-dir: the refresh's task vectors go there
    refreshed = taskvec("leaderboard", "--task", "sst2", "--refresh", "--top", "2", "--json", "--db", db.url,
                        "--cache-dir", str(elsewhere), home=db.home)  # fmt: skip
    assert any((elsewhere / "vectors").rglob("*.safetensors")), list(elsewhere.rglob("*"))
    second = json.loads(refreshed.stdout)[1]
    assert second["gain_ci"] is not None
    assert second["gain_ci"]["gain"] == pytest.approx(
        second["score_heldout"] - second["target_score_heldout"]
    )


def test_search_summary_says_no_significant_gain():
    from search.study import SearchSummary

    base = dict(
        study_name="s", storage="sqlite://", task="rte", n_finished=3, n_complete=3, n_pruned=0, trials_here=3,
        examples_scored=600, best_trial=2, best_score_search=70.0, best_score_heldout=61.0,
        target_score_search=65.0, target_score_heldout=60.0, candidates=("a",), elapsed_s=1.0, stopped="done",
    )  # fmt: skip
    text = search_summary(SearchSummary(**base, best_gain_ci={"lo": -1.5, "hi": 3.25, "level": 0.95}))
    assert "held-out gain +1.00 [-1.50, +3.25]: no significant gain" in text
    assert "significant" not in search_summary(SearchSummary(**base))


@pytest.mark.slow
def test_a_normalized_mean_row_gets_the_interval_of_its_objective(screened_db):
    from search.study import SearchConfig, run_search

    config = SearchConfig(
        task="sst2,mrpc", target="pico/t5-pico", objective="normalized-mean",
        references={"mrpc": "pico/t5-pico-mrpc"}, data_dir=screened_db.data, top_k=2, n_trials=3,
        storage=screened_db.storage, db_url=screened_db.url, search_size=SEARCH_SIZE,
        vector_cache=screened_db.cache, heldout_top_n=1, pruning=False,
    )  # fmt: skip
    done = run_search(config, progress=False)
    best = records.query(db_url=screened_db.url, study=done.study_name)[0]
    ci = best["gain_ci"]
    assert done.best_gain_ci == ci and sorted(ci["n"]) == ["mrpc", "sst2"]
    assert ci["gain"] == pytest.approx(best["score_heldout"] - best["target_score_heldout"], abs=1e-9)
    stored = records.stored_predictions(
        study=done.study_name, trial=best["trial_number"], db_url=screened_db.url
    )
    assert sorted(stored["tasks"]) == ["mrpc", "sst2"]
    assert (
        recompute_interval(
            study=done.study_name, trial=best["trial_number"], db_url=screened_db.url
        ).to_dict()
        == ci
    )


def test_one_task_objective_interval_is_the_single_task_interval():
    labels, a, b = _draw(np.random.default_rng(11), 90, p_a=0.8, p_b=0.7)
    single = paired_bootstrap(labels=labels, preds_a=a, preds_b=b, task="cola", seed=3)
    as_objective = paired_bootstrap_objective(
        labels={"cola": labels}, preds_a={"cola": a}, preds_b={"cola": b}, objective="score", seed=3
    )
    assert as_objective == single
