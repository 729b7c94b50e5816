"""Screening on the tiny zoo: every compatible candidate scored alone over a lambda grid, resumable."""

from __future__ import annotations

import json

import pytest

from registry.db import dispose_engines
from registry.errors import TaskvecError
from search.errors import SearchError
from search.scoring import Scorer, load_seq2seq
from search.screen import helpful_for, parse_lambdas, screen
from search.screen.run import is_clearly_harmful, screen_lambdas
from search.tasks import load_split
from search.vectors import Composer, TaskVector
from tests.search_world import SCREEN_GRID, SEARCH_SIZE, compatible_non_base, taskvec

# `synced_db` (tests/conftest.py): this module's copy of the registry synced from the tiny zoo; the tests
# below screen into it, in order.


def _screen(synced_db, **kwargs):
    args = dict(
        task="sst2",
        target="pico/t5-pico-sst2",
        db_url=synced_db.url,
        data_dir=synced_db.data,
        lambdas=SCREEN_GRID,
        search_size=SEARCH_SIZE,
        vector_cache=synced_db.cache,
        progress=False,
    )
    return screen(**{**args, **kwargs})


@pytest.fixture(scope="module")
def screened(synced_db):
    """(rows of a run stopped after 3 candidates, rows after the resumed full run)."""
    first = _screen(synced_db, limit=3)
    return first, _screen(synced_db)


@pytest.mark.slow
def test_screens_every_compatible_candidate_and_resumes(synced_db, screened):
    first, rows = screened
    assert len(first) == 3
    expected = compatible_non_base(synced_db.zoo) - {"pico/t5-pico-sst2"}
    assert {r["candidate_repo"] for r in rows} == expected
    # The resumed run kept the three rows of the interrupted one as they were.
    by_repo = {r["candidate_repo"]: r for r in rows}
    for r in first:
        assert by_repo[r["candidate_repo"]]["id"] == r["id"]
        assert by_repo[r["candidate_repo"]]["created"] == r["created"]
    target_scores = {r["target_score"] for r in rows}
    assert len(target_scores) == 1  # one target, one split, scored once
    for r in rows:
        tried = [t["lambda"] for t in r["lambdas"]]
        assert tried == sorted(tried) and set(tried) <= set(SCREEN_GRID)
        assert r["best_score"] == max(t["score"] for t in r["lambdas"])
        assert r["gain"] == pytest.approx(r["best_score"] - r["target_score"])
        assert all(t["n"] == SEARCH_SIZE for t in r["lambdas"])
        assert r["base_repo"] == "pico/t5-pico" and len(r["candidate_revision"]) == 40
    # Gains rank the candidates, and some candidate of the zoo helps the sst2 target alone.
    assert [r["gain"] for r in rows] == sorted((r["gain"] for r in rows), reverse=True)
    assert rows[0]["gain"] > 0
    again = _screen(synced_db)
    assert [(r["id"], r["gain"]) for r in again] == [(r["id"], r["gain"]) for r in rows]


@pytest.mark.slow
def test_screening_score_is_reproducible_from_the_row(synced_db, screened):
    """Invariant 1: target@sha + candidate@sha + lambda + split give back the stored score."""
    best = screened[1][0]
    hub = synced_db.zoo / "hub"
    model, tok = load_seq2seq(hub / best["target_repo"])
    tau = TaskVector.from_checkpoints(base=hub / "pico" / "t5-pico", finetuned=hub / best["candidate_repo"])
    tau.apply_to(model, best["best_lambda"])
    split = load_split("sst2", split="search", data_dir=synced_db.data, size=SEARCH_SIZE)
    assert split.fingerprint == best["split_fingerprint"]
    assert Scorer(model, tok, split).score().score == pytest.approx(best["best_score"], abs=1e-6)


def test_harm_rule():
    assert is_clearly_harmful(40.0, target_score=60.0, best_score=61.0, margin=5.0)
    assert not is_clearly_harmful(58.0, target_score=60.0, best_score=61.0, margin=5.0)  # within margin
    assert not is_clearly_harmful(40.0, target_score=60.0, best_score=42.0, margin=5.0)  # near the best


@pytest.mark.slow
def test_harmful_lambdas_stop_the_grid(synced_db):
    hub = synced_db.zoo / "hub"
    model, tok = load_seq2seq(hub / "pico" / "t5-pico-sst2")
    tau = TaskVector.from_checkpoints(base=hub / "pico" / "t5-pico", finetuned=hub / "pico" / "t5-pico-topic")
    composer = Composer(model, target=hub / "pico" / "t5-pico-sst2", vectors=[tau])
    scorer = Scorer(model, tok, load_split("sst2", split="search", data_dir=synced_db.data, size=SEARCH_SIZE))
    target = scorer.score().score
    full = screen_lambdas(scorer, composer, lambdas=[0.5, 0.1], target_score=target, harm_margin=1e9)
    assert [t["lambda"] for t in full] == [0.1, 0.5]  # ascending; nothing counts as harmful
    # Against a (hypothetical) perfect target every lambda scoring below the first one is clearly harmful:
    # the grid stops at the first such lambda instead of trying the rest.
    stopped = screen_lambdas(scorer, composer, lambdas=[0.1, 40.0, 80.0], target_score=101.0, harm_margin=0.0)
    scores = [t["score"] for t in stopped]
    first_drop = next((k for k in range(1, 3) if scores[k] < max(scores[:k])), None)
    assert len(stopped) == (3 if first_drop is None else first_drop + 1)
    # The live model is the target again afterwards.
    assert scorer.score().score == target


@pytest.mark.slow
def test_helpful_for_ranks_by_gain_and_cli(synced_db, screened):
    ranked = helpful_for("sst2", db_url=synced_db.url)
    assert ranked and [r["gain"] for r in ranked] == sorted((r["gain"] for r in ranked), reverse=True)
    assert all(r["status"] == "compatible" for r in ranked)
    dispose_engines()
    out = taskvec("helpful", "--task", "sst2", "--json", "--db", synced_db.url, home=synced_db.home)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [(r["repo_id"], r["gain"]) for r in listed] == [(r["repo_id"], r["gain"]) for r in ranked]
    table = taskvec("helpful", "--task", "sst2", "--db", synced_db.url, home=synced_db.home)
    assert ranked[0]["repo_id"] in table.stdout


def test_parse_lambdas():
    assert parse_lambdas("0.1, 0.5,1") == (0.1, 0.5, 1.0)
    with pytest.raises(SearchError, match="comma-separated"):
        parse_lambdas("0.1,x")


def test_bad_inputs_raise_one_line_errors(synced_db, tmp_path):
    def err(db=synced_db.url, **changes):
        with pytest.raises(TaskvecError) as info:
            _screen(synced_db, **{"db_url": db, **changes})
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "unknown task 'qnli'" in err(task="qnli")
    assert "target is incompatible" in err(target="pico/t5-pico-seed1")
    assert "not in the registry" in err(target="pico/nope")
    assert "registry is empty" in err(db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert "lambdas must be positive" in err(lambdas=(0.0, 0.5))


@pytest.mark.slow
def test_cli_error_is_one_line(synced_db, tmp_path):
    out = taskvec(
        "screen", "--task", "sst2", "--target", "pico/t5-pico-seed1", "--db", synced_db.url, home=tmp_path
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "target is incompatible" in out.stderr


@pytest.mark.slow
def test_excluded_candidates_are_neither_screened_nor_returned(synced_zoo, tmp_path):
    home = synced_zoo(tmp_path)
    keep = ("pico/t5-pico-[!f]*",)  # every repo but the food-* ones
    rows = _screen(home, exclude=keep)
    food = {r for r in compatible_non_base(home.zoo) if r.startswith("pico/t5-pico-f")}
    assert rows and {r["candidate_repo"] for r in rows} == food
    # A repo screened earlier but excluded now stays in the database and is not returned.
    rows = _screen(home, exclude=("pico/t5-pico-food-sst2-a",))
    expected = compatible_non_base(home.zoo) - {"pico/t5-pico-sst2", "pico/t5-pico-food-sst2-a"}
    assert {r["candidate_repo"] for r in rows} == expected
    dispose_engines()
