"""Multi-task compositions on the tiny zoo: objectives as defined, Pareto fronts, control guards, baseline, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import optuna
import pytest

from registry.db import dispose_engines
from registry.errors import TaskvecError
from search import leaderboard as lb
from search.export import export_trial
from search.scoring import Scorer, load_seq2seq
from search.study import (
    SearchConfig,
    global_lambda_baseline,
    lambda_param,
    run_search,
    study_baselines,
    use_param,
)
from search.study.objectives import Control, combine, pareto_mask
from search.tasks import load_split
from tests.search_world import SEARCH_SIZE, taskvec

BASE = "pico/t5-pico"
TASKS = ("sst2", "mrpc")
REFS = {"sst2": "pico/t5-pico-sst2", "mrpc": "pico/t5-pico-mrpc"}


@pytest.fixture(scope="module")
def multitask_config(screened_db):
    """The sst2+mrpc search of this module, on its copy of the screened registry (`screened_db`, conftest).

    sst2's reference is found among the screened targets; mrpc's (never screened) is named."""
    return SearchConfig(
        task=",".join(TASKS),
        target=BASE,
        objective="normalized-mean",
        references={"mrpc": REFS["mrpc"]},
        data_dir=screened_db.data,
        top_k=2,
        n_trials=8,
        storage=screened_db.storage,
        db_url=screened_db.url,
        search_size=SEARCH_SIZE,
        vector_cache=screened_db.cache,
        heldout_top_n=2,
        heartbeat_interval=1,
        grace_period=5,
    )


def _scores(model_dir, task, *, zoo, split):
    model, tok = load_seq2seq(model_dir)
    size = SEARCH_SIZE if split == "search" else None
    return Scorer(model, tok, load_split(task, split=split, data_dir=zoo / "glue", size=size)).score().score


@pytest.fixture(scope="module")
def searched(multitask_config):
    return run_search(multitask_config, progress=False)


@pytest.mark.slow
def test_normalized_mean_rows_are_as_defined(screened_db, searched):
    hub = screened_db.hub
    rows = lb.query(db_url=screened_db.url, study=searched.study_name)
    assert searched.n_finished == 8 and rows and searched.objective == "normalized-mean"
    refs = rows[0]["reference_scores"]
    assert {t: r["repo_id"] for t, r in refs.items()} == REFS
    for task in TASKS:  # each reference's own score, measured independently
        for split in ("search", "heldout"):
            assert refs[task][f"score_{split}"] == pytest.approx(
                _scores(hub / REFS[task], task, zoo=screened_db.zoo, split=split), abs=1e-9
            )
    base = {t: _scores(hub / BASE, t, zoo=screened_db.zoo, split="search") for t in TASKS}
    assert searched.target_score_search == pytest.approx(
        100 * sum(base[t] / refs[t]["score_search"] for t in TASKS) / 2
    )
    for r in rows:
        assert r["task"] == "sst2,mrpc" and r["objective"] == "normalized-mean" and r["feasible"]
        assert set(r["scores"]) == set(TASKS)
        search = {t: r["scores"][t]["search"] for t in TASKS}
        assert r["score_search"] == pytest.approx(
            100 * sum(search[t] / refs[t]["score_search"] for t in TASKS) / 2
        )
        assert {i["repo_id"] for i in r["ingredients"]} <= set(REFS.values())
    for r in rows[:2]:  # held-out per task for the top rows, and the objective on them
        heldout = {t: r["scores"][t]["heldout"] for t in TASKS}
        assert None not in heldout.values()
        assert r["score_heldout"] == pytest.approx(
            combine(heldout, kind="normalized-mean", references={t: refs[t]["score_heldout"] for t in TASKS})
        )
    assert searched.best_scores == {t: rows[0]["scores"][t]["search"] for t in TASKS}


@pytest.mark.slow
def test_best_multitask_row_rebuilds_from_the_base(screened_db, searched, tmp_path):
    """Invariant 1 for a multi-task row: export it, reload, and score every task again."""
    best = lb.study_best(study=searched.study_name, db_url=screened_db.url)
    assert best["target_repo"] == BASE and best["ingredients"]
    folder = export_trial(study=searched.study_name, out=tmp_path / "merged", db_url=screened_db.url)
    for task in TASKS:
        assert _scores(folder, task, zoo=screened_db.zoo, split="search") == pytest.approx(
            best["scores"][task]["search"], abs=1e-9
        )
        assert _scores(folder, task, zoo=screened_db.zoo, split="heldout") == pytest.approx(
            best["scores"][task]["heldout"], abs=1e-9
        )


@pytest.mark.slow
def test_warm_start_and_global_lambda_baseline_agree(screened_db, multitask_config, searched):
    study = optuna.load_study(study_name=searched.study_name, storage=screened_db.storage)
    first = study.trials[0]  # the warm start: every reference at lambda 0.3 (FusionBench's default)
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert first.params == {
        **{use_param(r): True for r in REFS.values()},
        **{lambda_param(r): 0.3 for r in REFS.values()},
    }
    baseline = global_lambda_baseline(multitask_config, lambdas=(0.3, 0.6))
    assert set(baseline.ingredients) == set(REFS.values()) and set(baseline.grid) == {0.3, 0.6}
    # The same composition scored by the baseline and by the study: one code path, one number.
    assert baseline.grid[0.3] == pytest.approx(first.value, abs=1e-9)
    assert baseline.lambda_ == max(baseline.grid, key=baseline.grid.get)
    assert set(baseline.scores) == set(TASKS) and all(
        s["heldout"] is not None for s in baseline.scores.values()
    )
    assert baseline.objective_search == pytest.approx(baseline.grid[baseline.lambda_])


@pytest.mark.slow
def test_warm_start_tries_each_reference_alone_as_the_best_single_baseline(
    screened_db, multitask_config, searched
):
    """After the uniform lambdas, each reference alone at 1.0: the search starts from the best single it
    is shown beside, so (where those trials run to the end) it does not end below it on the search split."""
    study = optuna.load_study(study_name=searched.study_name, storage=screened_db.storage)
    refs = sorted(REFS.values())
    singles = study.trials[3 : 3 + len(refs)]
    for trial, ref in zip(singles, refs, strict=True):
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.params == {**{use_param(r): r == ref for r in refs}, lambda_param(ref): 1.0}
    best = next(r for r in study_baselines(multitask_config).rows if r.name == "best-single")
    assert best.objective_search == pytest.approx(max(t.value for t in singles), abs=1e-9)
    assert study.best_value >= best.objective_search - 1e-9


@pytest.mark.slow
def test_rerun_resumes_the_multitask_study(multitask_config, searched):
    again = run_search(multitask_config, progress=False)
    assert again.study_name == searched.study_name and again.trials_here == 0 and again.n_finished == 8


@pytest.mark.slow
def test_pareto_search_marks_the_front_through_the_cli(screened_db, tmp_path):
    dispose_engines()
    args = (
        "search", "--tasks", ",".join(TASKS), "--target", BASE, "--objective", "pareto",
        "--reference", f"mrpc={REFS['mrpc']}", "--data", str(screened_db.data), "--top-k", "2",
        "--search-size", str(SEARCH_SIZE), "--trials", "6", "--heldout-top", "1", "--json",
        "--db", screened_db.url, "--storage", screened_db.storage,
    )  # fmt: skip
    out = taskvec(*args, home=screened_db.home)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["objective"] == "pareto" and summary["n_finished"] == 6 and summary["n_pruned"] == 0
    study = summary["study_name"]
    rows = lb.query(db_url=screened_db.url, study=study)
    points = [[r["scores"][t]["search"] for t in sorted(TASKS)] for r in rows]
    assert [r["pareto"] for r in rows] == pareto_mask(points)  # checked by brute force in test_objectives
    assert summary["n_pareto"] == sum(r["pareto"] for r in rows) >= 1
    # Optuna's own front of the multi-objective study agrees with the leaderboard's flags.
    optuna_front = {
        t.number for t in optuna.load_study(study_name=study, storage=screened_db.storage).best_trials
    }
    assert optuna_front == {r["trial_number"] for r in rows if r["pareto"]}

    listed = taskvec(
        "leaderboard", "--pareto", "--study", study, "--json", "--db", screened_db.url, home=screened_db.home
    )
    assert listed.returncode == 0, listed.stderr
    assert {r["trial_number"] for r in json.loads(listed.stdout)} == {
        r["trial_number"] for r in rows if r["pareto"]
    }
    table = taskvec(
        "leaderboard", "--pareto", "--study", study, "--db", screened_db.url, home=screened_db.home
    )
    assert table.returncode == 0 and "Pareto front" in table.stdout, table.stderr
    report = taskvec(
        "report", "--study", study, "--out", str(tmp_path / "rep"), "--db", screened_db.url,
        "--storage", screened_db.storage, home=screened_db.home,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "rep" / "pareto.png").stat().st_size > 0
    assert "pareto.png" in (tmp_path / "rep" / "index.html").read_text()


@pytest.mark.slow
def test_control_guard_rows_are_consistent_and_never_best(screened_db):
    """A guard with no tolerated drop: each row's feasibility follows from its stored control scores."""
    config = SearchConfig(
        task="sst2",
        target=REFS["sst2"],
        data_dir=screened_db.data,
        top_k=3,
        n_trials=8,
        pruning=False,
        heldout_top_n=1,
        storage=screened_db.storage,
        db_url=screened_db.url,
        search_size=SEARCH_SIZE,
        vector_cache=screened_db.cache,
        controls=(Control("cola", max_drop=0.0),),
    )
    s = run_search(config, progress=False)
    rows = lb.query(db_url=screened_db.url, study=s.study_name)
    assert len(rows) == 8 and s.n_infeasible == sum(not r["feasible"] for r in rows)
    target_cola = _scores(screened_db.hub / REFS["sst2"], "cola", zoo=screened_db.zoo, split="search")
    trials = {t.number: t for t in optuna.load_study(study_name=s.study_name, storage=config.storage).trials}
    for r in rows:
        guard = r["constraints"]["cola"]
        assert guard["target_search"] == pytest.approx(target_cola, abs=1e-9)
        assert guard["violation"] == pytest.approx(target_cola - guard["score_search"])
        assert r["feasible"] == (guard["violation"] <= 0)
        assert trials[r["trial_number"]].constraints == {"cola": pytest.approx(guard["violation"])}
    best = lb.study_best(study=s.study_name, db_url=screened_db.url)
    if any(r["feasible"] for r in rows):
        assert best["feasible"] and best["score_search"] == max(
            r["score_search"] for r in rows if r["feasible"]
        )
        assert s.best_trial == best["trial_number"]
        assert best["constraints"]["cola"]["score_heldout"] is not None  # controls get held-out scores too
    else:
        assert best is None and s.best_trial is None
    # A guarded study is a different study: same options but the guard give another name.
    assert (
        s.study_name
        != run_search(replace(config, controls=(), n_trials=1, heldout_top_n=0), progress=False).study_name
    )


def test_multitask_bad_inputs_are_one_line(multitask_config, tmp_path):
    def err(**changes):
        with pytest.raises(TaskvecError) as info:
            run_search(
                replace(multitask_config, storage=f"sqlite:///{tmp_path / 'o.db'}", **changes), progress=False
            )
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "needs several" in err(task="sst2", objective="pareto", references={})
    assert "not one of the searched tasks" in err(references={"rte": "pico/t5-pico-rte"})
    assert "control task cannot also be searched" in err(controls=(Control("mrpc"),))
    assert "listed twice" in err(task="sst2,sst2")
    # rte was never screened and is not named: the error says how to name its fine-tuned model.
    assert "--reference rte=" in err(task="sst2,rte", references={})
    assert "not in the registry" in err(references={"mrpc": "pico/nope"})
