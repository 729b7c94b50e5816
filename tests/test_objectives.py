"""Objectives, control guards and Pareto fronts on hand-made cases; the leaderboard never ranks an infeasible row."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import pytest

from registry.db import dispose_engines
from search import leaderboard as lb
from search.errors import SearchError
from search.study import records
from search.study.objectives import (
    Control,
    combine,
    is_feasible,
    pareto_mask,
    parse_control,
    parse_reference,
    resolve_objective,
)


def test_mean_and_normalized_mean_as_defined():
    scores = {"mrpc": 80.0, "rte": 60.0, "cola": 20.0}
    refs = {"mrpc": 100.0, "rte": 75.0, "cola": 40.0}
    assert combine(scores, kind="mean") == pytest.approx((80 + 60 + 20) / 3)
    # 100 * mean(0.8, 0.8, 0.5): the paper's normalized accuracy, 100 = as good as each fine-tune
    assert combine(scores, kind="normalized-mean", references=refs) == pytest.approx(70.0)
    assert combine(refs, kind="normalized-mean", references=refs) == pytest.approx(100.0)
    assert combine({"rte": 61.5}, kind="score") == 61.5
    assert combine(scores, kind="pareto") == combine(scores, kind="mean")  # its displayed summary
    with pytest.raises(SearchError, match="no fine-tuned reference score for cola"):
        combine(scores, kind="normalized-mean", references={"mrpc": 1.0, "rte": 1.0})
    with pytest.raises(SearchError, match="positive reference"):
        combine(scores, kind="normalized-mean", references={**refs, "cola": 0.0})
    with pytest.raises(SearchError, match="one task"):
        combine(scores, kind="score")


def test_objective_kinds_and_option_parsing():
    assert resolve_objective(None, ["rte"]) == "score"
    assert resolve_objective("mean", ["rte"]) == "score"
    assert resolve_objective(None, ["rte", "cola"]) == "mean"
    assert resolve_objective("pareto", ["rte", "cola"]) == "pareto"
    for bad, tasks, match in [
        ("pareto", ["rte"], "needs several"),
        ("score", ["rte", "cola"], "takes one task"),
        ("median", ["rte", "cola"], "unknown objective"),
    ]:
        with pytest.raises(SearchError, match=match):
            resolve_objective(bad, tasks)
    assert parse_control("cola") == Control("cola", 1.0)
    assert parse_control("sst2:0.5") == Control("sst2", 0.5)
    for bad in ("qnli:1", "cola:-1", "cola:lots"):
        with pytest.raises(SearchError, match="--control"):
            parse_control(bad)
    assert parse_reference("rte=org/t5-rte") == ("rte", "org/t5-rte")
    for bad in ("rte", "=org/x", "qnli=org/x"):
        with pytest.raises(SearchError, match="--reference"):
            parse_reference(bad)


def test_control_violation_follows_optunas_sign():
    guard = Control("cola", max_drop=1.0)
    assert guard.violation(score=49.5, target_score=50.0) < 0  # dropped 0.5: holds
    assert guard.violation(score=49.0, target_score=50.0) == 0  # dropped exactly 1.0: holds
    assert guard.violation(score=48.0, target_score=50.0) > 0  # dropped 2.0: infeasible
    assert is_feasible([-0.5, 0.0]) and not is_feasible([-0.5, 0.1]) and is_feasible(None)
    assert not is_feasible({"cola": {"violation": 0.2}}) and is_feasible({"cola": {"violation": -3}})


def _brute_force_front(points):
    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(
            x > y for x, y in zip(a, b, strict=True)
        )

    return [not any(dominates(q, p) for q in points) for p in points]


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_pareto_mask_equals_a_brute_force_check(dims):
    rng = random.Random(dims)
    for _ in range(30):
        # Few distinct values per coordinate: many ties and duplicates, where fronts go wrong.
        points = [[rng.randint(0, 5) for _ in range(dims)] for _ in range(rng.randint(1, 40))]
        assert pareto_mask(points) == _brute_force_front(points)
    assert pareto_mask([]) == []
    assert pareto_mask([[1, 1], [1, 1]]) == [True, True]  # equal points do not dominate each other


def _row(study, n, *, scores, feasible=True, task="mrpc,rte"):
    mean = sum(scores.values()) / len(scores)
    return {
        "task": task,
        "study": study,
        "trial_number": n,
        "state": "complete",
        "score_search": mean,
        "metrics": {"search": {}},
        "target_score_search": 50.0,
        "target_score_heldout": None,
        "target_repo": "o/target",
        "target_revision": "t" * 40,
        "base_repo": "o/base",
        "base_revision": "b" * 40,
        "ingredients": [{"repo_id": "o/a", "revision": "a" * 40, "coefficient": 0.1 * (n + 1)}],
        "method": "task_arithmetic",
        "method_options": {},
        "scorer": {"mode": "rank"},
        "split_fingerprints": {"search": "s", "heldout": "h"},
        "scores": {t: {"search": v, "heldout": None} for t, v in scores.items()},
        "objective": "pareto",
        "constraints": {"cola": {"violation": -1.0 if feasible else 2.0}},
        "feasible": feasible,
        "pareto": False,
        "examples_scored": 10,
        "worker": "test:1",
        "created": datetime.now(UTC),
    }


@pytest.fixture
def db(tmp_path):
    yield f"sqlite:///{tmp_path / 'taskvec.db'}"
    dispose_engines()


def test_leaderboard_pareto_flags_equal_brute_force(db):
    rng = random.Random(7)
    rows = [
        _row("p", n, scores={"mrpc": rng.randint(50, 60), "rte": rng.randint(50, 60)}, feasible=n % 5 != 0)
        for n in range(40)
    ]
    # An infeasible row that would dominate everything must not shape the front.
    rows.append(_row("p", 40, scores={"mrpc": 99, "rte": 99}, feasible=False))
    records.upsert_rows(rows, db_url=db)
    n_front = records.update_pareto(study="p", db_url=db)
    got = {r["trial_number"]: r["pareto"] for r in lb.query(db_url=db, study="p")}
    feasible = [r for r in rows if r["feasible"]]
    expected = dict.fromkeys((r["trial_number"] for r in rows), False)
    points = [[r["scores"][t]["search"] for t in ("mrpc", "rte")] for r in feasible]
    for r, on in zip(feasible, _brute_force_front(points), strict=True):
        expected[r["trial_number"]] = on
    assert got == expected and n_front == sum(expected.values()) > 0
    front = lb.query(db_url=db, study="p", pareto_only=True)
    assert {r["trial_number"] for r in front} == {n for n, on in expected.items() if on}
    # Rewriting a row (a resumed sync) keeps the flags computed after the trial.
    records.upsert_rows([rows[1]], db_url=db)
    assert {r["trial_number"]: r["pareto"] for r in lb.query(db_url=db, study="p")} == expected


def test_an_infeasible_row_never_wins(db):
    records.upsert_rows(
        [
            _row("g", 0, scores={"mrpc": 90, "rte": 90}, feasible=False),  # best score, failed its guard
            _row("g", 1, scores={"mrpc": 70, "rte": 70}),
            _row("g", 2, scores={"mrpc": 60, "rte": 60}),
        ],
        db_url=db,
    )
    assert lb.study_best(study="g", db_url=db)["trial_number"] == 1
    assert lb.get_row(study="g", db_url=db)["trial_number"] == 1  # export's default
    assert lb.get_row(study="g", trial=0, db_url=db)["feasible"] is False  # still reachable by number
    (summary,) = lb.summary(db_url=db, study="g")
    assert summary["trial_number"] == 1 and summary["best_score_search"] == 70
    listed = lb.query(db_url=db, study="g")
    assert [r["trial_number"] for r in listed] == [1, 2, 0]  # kept, listed after every feasible row
    assert [r["trial_number"] for r in lb.query(db_url=db, study="g", feasible_only=True)] == [1, 2]
    records.upsert_rows([_row("h", 0, scores={"mrpc": 90, "rte": 90}, feasible=False)], db_url=db)
    assert lb.study_best(study="h", db_url=db) is None
    with pytest.raises(SearchError, match="control guard"):
        lb.get_row(study="h", db_url=db)


def test_brute_force_helper_is_itself_right():
    # The reference the tests trust: on a grid, the front of {(x, y)} with x + y <= 3 is the anti-diagonal.
    points = [[x, y] for x, y in itertools.product(range(4), repeat=2) if x + y <= 3]
    front = {tuple(p) for p, on in zip(points, _brute_force_front(points), strict=True) if on}
    assert front == {(0, 3), (1, 2), (2, 1), (3, 0)}
