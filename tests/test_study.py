"""The composition search on the tiny zoo: quota, leaderboard rows, held-out scores, resume, pruning, errors."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import optuna
import pytest

from registry.db import dispose_engines
from registry.errors import TaskvecError
from search import leaderboard as lb
from search.errors import SearchError
from search.scoring import NestedPrefixScorer, Scorer, load_seq2seq, prefix_sizes
from search.study import (
    SearchConfig,
    StudyContext,
    coefficients_from_params,
    default_study_name,
    lambda_param,
    parse_duration,
    run_search,
    select_candidates,
    use_param,
    warm_start_params,
)
from search.tasks import load_split
from search.vectors import Composer, TaskVector
from tests.search_world import SEARCH_SIZE, taskvec

TASK, TARGET = "sst2", "pico/t5-pico-sst2"


# --- pure pieces ---------------------------------------------------------------------------------------


def test_prefix_sizes_sit_on_the_pruner_rungs():
    assert prefix_sizes(200, rungs=3, reduction_factor=3, pruning=True, min_prefix=1) == [23, 69, 200]
    assert prefix_sizes(200, rungs=3, reduction_factor=3, pruning=False) == [200]
    assert prefix_sizes(5, rungs=3, reduction_factor=3, pruning=True, min_prefix=1) == [1, 3, 5]
    assert prefix_sizes(1000, rungs=2, reduction_factor=2, pruning=True) == [500, 1000]


def test_first_prefix_is_large_enough_to_judge():
    # 23 examples would decide a trial's fate on noise: the rung below 64 examples is dropped.
    assert prefix_sizes(200, rungs=3, reduction_factor=3, pruning=True) == [67, 200]
    assert prefix_sizes(1000, rungs=3, reduction_factor=3, pruning=True) == [112, 336, 1000]
    assert prefix_sizes(100, rungs=3, reduction_factor=3, pruning=True) == [100]


def test_candidate_rule_and_warm_start():
    rows = [
        {"candidate_repo": "o/a", "gain": -1.0, "best_lambda": 0.3},
        {"candidate_repo": "o/b", "gain": 2.0, "best_lambda": 2.0},
        {"candidate_repo": "o/c", "gain": 0.5, "best_lambda": 0.5},
    ]
    assert [r["candidate_repo"] for r in select_candidates(rows, top_k=5)] == ["o/b", "o/c"]
    assert [r["candidate_repo"] for r in select_candidates(rows, top_k=1)] == ["o/b"]
    # No positive gain: the K best anyway.
    assert [r["candidate_repo"] for r in select_candidates(rows[:1], top_k=2)] == ["o/a"]
    chosen = select_candidates(rows, top_k=5)
    warm = warm_start_params(chosen, lambda_max=1.5)
    b, c = use_param("o/b"), use_param("o/c")
    lb_, lc = lambda_param("o/b"), lambda_param("o/c")
    # The best single (clamped to the study's range), then add-all: every helper at its own lambda.
    assert warm[0] == {b: True, c: False, lb_: 1.5}
    assert warm[1] == {b: True, c: True, lb_: 1.5, lc: 0.5}
    # The best one paired with the next, one of the two at half its lambda.
    assert warm[2] == {b: True, c: True, lb_: 1.5, lc: 0.25}
    assert warm[3] == {b: True, c: True, lb_: 0.75, lc: 0.5}
    # Then one uniform lambda for all: the median of the screened ones (clamped), and 0.3.
    assert warm[4:] == [{b: True, c: True, lb_: 1.5, lc: 1.5}, {b: True, c: True, lb_: 0.3, lc: 0.3}]
    assert coefficients_from_params(warm[0], ["o/b", "o/c"]) == [1.5, 0.0]
    # Partners: the next `partners` candidates only; no duplicate trials; one candidate: only itself.
    many = [{"candidate_repo": f"o/{i}", "best_lambda": 1.0} for i in range(6)]
    pairs = [
        w
        for w in warm_start_params(many, lambda_max=1.5)
        if sum(w[use_param(r["candidate_repo"])] for r in many) == 2
    ]
    assert len(pairs) == 2 * 3 and all(p[use_param("o/0")] for p in pairs)
    assert len(warm_start_params(many, lambda_max=1.5)) == 1 + 1 + 6 + 1  # the uniform median is add-all
    assert warm_start_params(chosen[:1], lambda_max=1.5) == [{b: True, lb_: 1.5}]


def test_options_and_names():
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("8h") == 28800
    with pytest.raises(SearchError, match="timeout"):
        parse_duration("soon")
    config = SearchConfig(task=TASK, target=TARGET)
    assert default_study_name(config, target_revision="ab" * 20) == default_study_name(
        config, target_revision="ab" * 20
    )
    assert default_study_name(config, target_revision="ab" * 20) != default_study_name(
        replace(config, top_k=4), target_revision="ab" * 20
    )
    for bad, match in [
        (dict(sampler="grid"), "unknown sampler"),
        (dict(method="average"), "unknown merge method"),
        (dict(task="qnli"), "unknown task"),
        (dict(n_trials=0), "at least 1"),
    ]:
        with pytest.raises(Exception, match=match):
            replace(config, **bad).validate()


def _first_version_attr():
    """A study's `taskvec` attribute as the first version wrote it (one task; no tasks, objective, controls)."""
    return {
        "task": "rte",
        "target": {"repo_id": "o/t5-rte", "revision": "a" * 40},
        "base": {"repo_id": "o/t5", "revision": "b" * 40},
        "candidates": [{"repo_id": "o/c", "revision": "c" * 40, "best_lambda": 0.5, "gain": 1.5}],
        "method": "task_arithmetic",
        "method_options": {},
        "lambda_max": 1.5,
        "scorer": {
            "mode": "rank",
            "order_seed": 0,
            "max_input_length": 512,
            "autocast": None,
            "label_words": ["entailment", "not_entailment"],
            "search_size": 200,
            "split_seed": 0,
            "data": "hub",
        },
        "split_fingerprints": {"search": "s" * 64, "heldout": "h" * 64},
        "pruning": True,
        "n_trials_asked": 100,
        "study": "rte-t5-rte@aaaaaaaa-task_arithmetic-k16-tpe-123456",
    }


def test_old_study_contexts_read_as_one_task_studies():
    old = _first_version_attr()
    context = StudyContext.from_attr(old)
    assert context.tasks == ("rte",) and context.objective == "score" and context.label == "rte"
    assert context.controls == () and context.references == {} and context.repos == ["o/c"]
    # Read back, it is what today's code stores for a one-task study: the old keys unchanged, and those
    # added since with the values old studies meant.
    stored = context.to_attr()
    assert {k: v for k, v in stored.items() if k in old} == old
    assert {k: stored[k] for k in set(stored) - set(old)} == {
        "tasks": ["rte"],
        "objective": "score",
        "controls": [],
    }
    assert StudyContext.from_attr(stored) == context
    with pytest.raises(SearchError, match="lacks"):
        StudyContext.from_attr({k: v for k, v in old.items() if k != "candidates"})


def test_multitask_context_round_trips():
    attr = {
        **_first_version_attr(),
        "task": "rte,mrpc",
        "tasks": ["rte", "mrpc"],
        "objective": "normalized-mean",
        "controls": [{"task": "cola", "max_drop": 1.0}],
        "references": {
            t: {"repo_id": f"o/t5-{t}", "revision": t[0] * 40, "score_search": 70.0, "score_heldout": 60.0}
            for t in ("rte", "mrpc")
        },
        "candidates": [
            {
                "repo_id": "o/t5-rte",
                "revision": "r" * 40,
                "best_lambda": 1.0,
                "gain": 0.0,
                "role": "reference",
                "task": "rte",
            }
        ],
        "split_fingerprints": {
            "search": "s" * 64,
            "heldout": "h" * 64,
            "tasks": {t: {"search": "x", "heldout": "y"} for t in ("rte", "mrpc")},
            "controls": {"cola": {"search": "x", "heldout": "y"}},
        },
    }
    context = StudyContext.from_attr(attr)
    assert context.reference_scores("heldout") == {"rte": 60.0, "mrpc": 60.0}
    assert context.to_attr() == attr


# --- on the tiny zoo -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study_config(screened_db):
    """The sst2 search of this module, on its copy of the screened registry (`screened_db`, conftest)."""
    return SearchConfig(
        task=TASK,
        target=TARGET,
        data_dir=screened_db.data,
        top_k=4,
        n_trials=10,
        storage=screened_db.storage,
        db_url=screened_db.url,
        search_size=SEARCH_SIZE,
        vector_cache=screened_db.cache,
        heartbeat_interval=1,
        grace_period=5,
    )


def test_nested_prefix_scorer_matches_plain_prefixes(screened_db):
    model, tok = load_seq2seq(screened_db.hub / TARGET)
    split = load_split(TASK, split="search", data_dir=screened_db.data, size=SEARCH_SIZE)
    sizes = prefix_sizes(len(split), rungs=3, reduction_factor=3, pruning=True)
    nested = dict(NestedPrefixScorer(model, tok, split, sizes=sizes).iter_scores())
    plain = Scorer(model, tok, split)
    for n in sizes:
        assert nested[n] == pytest.approx(plain.score(prefix=n).metrics)


@pytest.fixture(scope="module")
def searched(study_config):
    return run_search(study_config, progress=False)


@pytest.mark.slow
def test_search_fills_the_leaderboard(screened_db, study_config, searched):
    s = searched
    assert s.n_finished == 10 and s.trials_here == 10 and s.stopped == "done"
    study = optuna.load_study(study_name=s.study_name, storage=study_config.storage)
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    rows = lb.query(db_url=screened_db.url, study=s.study_name)
    assert {r["trial_number"] for r in rows} == complete and len(rows) == len(complete)
    # Best on the search split is at least the target (the best single candidate is enqueued first).
    assert s.best_score_search >= s.target_score_search
    best = rows[0]
    assert best["score_search"] == s.best_score_search and best["trial_number"] == s.best_trial
    assert best["target_score_search"] == s.target_score_search
    # Held-out only for the top 3, after the search.
    assert all(r["score_heldout"] is not None for r in rows[:3])
    assert all(r["score_heldout"] is None for r in rows[3:])
    assert best["scores"][TASK] == {"search": best["score_search"], "heldout": best["score_heldout"]}
    assert best["objective"] == "score" and best["pareto"] is False and best["constraints"] == {}
    for r in rows:
        assert r["split_fingerprints"]["search"] != r["split_fingerprints"]["heldout"]
        assert all(len(i["revision"]) == 40 and i["coefficient"] > 0 for i in r["ingredients"])
        assert r["worker"].endswith(":" + str(os.getpid()))
        assert r["scorer"]["mode"] == "rank" and r["scorer"]["search_size"] == SEARCH_SIZE


@pytest.mark.slow
def test_best_row_is_reproducible(screened_db, searched):
    """Invariant 1: rebuilding the best row's composition gives its search and held-out scores."""
    best = lb.study_best(study=searched.study_name, db_url=screened_db.url)
    hub = screened_db.hub
    model, tok = load_seq2seq(hub / best["target_repo"])
    vectors = [
        TaskVector.from_checkpoints(base=hub / best["base_repo"], finetuned=hub / i["repo_id"])
        for i in best["ingredients"]
    ]
    Composer(model, target=hub / best["target_repo"], vectors=vectors).apply(
        [i["coefficient"] for i in best["ingredients"]]
    )
    glue = screened_db.data
    search = Scorer(model, tok, load_split(TASK, split="search", data_dir=glue, size=SEARCH_SIZE)).score()
    heldout = Scorer(model, tok, load_split(TASK, split="heldout", data_dir=glue)).score()
    assert search.score == pytest.approx(best["score_search"], abs=1e-9)
    assert heldout.score == pytest.approx(best["score_heldout"], abs=1e-9)


@pytest.mark.slow
def test_rerun_resumes_the_same_study(screened_db, study_config, searched):
    again = run_search(study_config, progress=False)
    assert again.study_name == searched.study_name and again.trials_here == 0 and again.n_finished == 10
    more = run_search(replace(study_config, n_trials=13), progress=False)
    assert more.n_finished == 13 and more.trials_here == 3
    rows = lb.query(db_url=screened_db.url, study=searched.study_name)
    assert len({r["trial_number"] for r in rows}) == len(rows) == more.n_complete


@pytest.mark.slow
def test_pruning_lowers_examples_scored(study_config, searched):
    off = run_search(replace(study_config, pruning=False, heldout_top_n=0), progress=False)
    assert off.study_name != searched.study_name
    assert off.n_pruned == 0 and off.examples_scored == 10 * SEARCH_SIZE
    assert searched.n_pruned > 0
    assert searched.examples_scored < off.examples_scored


@pytest.mark.slow
def test_export_cli_rebuilds_the_best_row(screened_db, searched, tmp_path):
    # The resume test may have extended this study past the fixture's 10 trials, so the best
    # row to rebuild is the study's best now, not the fixture's summary.
    best = lb.study_best(study=searched.study_name, db_url=screened_db.url)
    dispose_engines()
    out = taskvec(
        "export",
        "--study",
        searched.study_name,
        "--out",
        str(tmp_path / "merged"),
        "--db",
        screened_db.url,
        home=screened_db.home,
    )
    assert out.returncode == 0, out.stderr
    model, tok = load_seq2seq(tmp_path / "merged")
    split = load_split(TASK, split="search", data_dir=screened_db.data, size=SEARCH_SIZE)
    assert Scorer(model, tok, split).score().score == pytest.approx(best["score_search"], abs=1e-9)
    assert (tmp_path / "merged" / "recipe.yaml").is_file()
    board = taskvec(
        "leaderboard",
        "--json",
        "--study",
        searched.study_name,
        "--db",
        screened_db.url,
        home=screened_db.home,
    )
    assert board.returncode == 0, board.stderr
    assert json.loads(board.stdout)[0]["trial_number"] == best["trial_number"]


def test_bad_inputs_raise_one_line_errors(screened_db, study_config, tmp_path):
    def err(db=screened_db.url, **changes):
        with pytest.raises(TaskvecError) as info:
            run_search(replace(study_config, db_url=db, **changes), progress=False)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "unknown task" in err(task="qnli")
    assert "unknown sampler" in err(sampler="grid")
    assert "target is incompatible" in err(target="pico/t5-pico-seed1")
    assert "not in the registry" in err(target="pico/nope")
    assert "registry is empty" in err(db=f"sqlite:///{tmp_path / 'e.db'}")
    # rte's target was never screened in this registry.
    assert "taskvec screen" in err(
        task="rte", target="pico/t5-pico-rte", storage=f"sqlite:///{tmp_path / 'o.db'}"
    )


@pytest.mark.slow
def test_cli_unreachable_storage_is_one_line_without_password(screened_db, tmp_path):
    out = taskvec(
        "search",
        "--task",
        TASK,
        "--target",
        TARGET,
        "--data",
        str(screened_db.data),
        "--db",
        screened_db.url,
        "--storage",
        "postgresql://taskvec:s3cret@127.0.0.1:1/nodb",
        home=tmp_path,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "cannot open the Optuna storage" in out.stderr and "s3cret" not in out.stderr


@pytest.mark.slow
def test_refresh_heldout_rebuilds_rows_from_the_registry(screened_db, searched):
    """`leaderboard --refresh`: rows beyond the search's top 3 get held-out scores, rebuilt from the rows."""
    before = lb.query(db_url=screened_db.url, study=searched.study_name)
    n = lb.refresh_heldout(db_url=screened_db.url, study=searched.study_name, top_n=5)
    after = lb.query(db_url=screened_db.url, study=searched.study_name)
    assert n == sum(1 for r in before[:5] if r["score_heldout"] is None)
    assert all(r["score_heldout"] is not None for r in after[:5])
    assert [r["score_heldout"] for r in after[:3]] == [r["score_heldout"] for r in before[:3]]
    assert lb.refresh_heldout(db_url=screened_db.url, study=searched.study_name, top_n=5) == 0  # idempotent


@pytest.mark.slow
def test_ties_search_records_its_options(screened_db, study_config):
    s = run_search(
        replace(study_config, method="ties", n_trials=3, heldout_top_n=0, pruning=False), progress=False
    )
    assert s.n_finished == 3 and "-ties-" in s.study_name
    rows = lb.query(db_url=screened_db.url, study=s.study_name)
    assert rows and all(r["method"] == "ties" for r in rows)
    assert "density" in rows[0]["method_options"]  # defaults filled in: the row rebuilds exactly
