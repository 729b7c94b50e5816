"""The demo pipeline end to end on the tiny zoo: sync, screen and search each GLUE task, reports; rerun resumes.

The budget is tiny (a few trials per task), so the test checks the pipeline's bookkeeping, not the size of
the gains: the demo's table agrees with the leaderboard, held-out scores exist for the best trials, the
reports are written, and a rerun adds no trial and no row.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from benchmarks import demo
from benchmarks.zoo import load_manifest
from search import leaderboard

TRIALS = 3
# Two tasks (single sentences and pairs), small splits: the pipeline's bookkeeping, within the test budget.
TASKS = ("sst2", "mrpc")
SEARCH_SIZE = 100


@pytest.mark.slow
def test_demo_pipeline_on_tiny_zoo(tiny_zoo: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "elsewhere"))  # the demo must use its own home
    out = tmp_path / "demo"
    config = demo.DemoConfig(
        out=out,
        zoo=tiny_zoo,
        tasks=TASKS,
        trials=TRIALS,
        top_k=2,
        heldout_top_n=1,
        search_size=SEARCH_SIZE,
        lambdas=(1.0,),
        progress=False,
        multi_trials=TRIALS,
        multi_search_size=SEARCH_SIZE,
    )
    summary = demo.run_demo(config)

    db_url, storage = demo.demo_urls(out)
    assert summary.db_url == db_url and (out / "home" / "taskvec.db").is_file()
    assert [r.task for r in summary.results] == list(config.tasks)
    for r in summary.results:
        rows = leaderboard.query(db_url=db_url, study=r.study)
        assert rows, f"{r.task}: no leaderboard rows"
        best = rows[0]
        # the table reports the leaderboard's best row of the study, chosen on the search split
        assert r.best_score_search == pytest.approx(max(x["score_search"] for x in rows))
        assert r.best_trial == best["trial_number"]
        assert r.best_score_heldout is not None and r.target_score_heldout is not None
        assert r.best_score_heldout == pytest.approx(best["score_heldout"])
        assert r.ingredients == best["ingredients"]
        study = optuna.load_study(study_name=r.study, storage=storage)
        finished = [
            t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL
        ]
        assert len(finished) == TRIALS == r.n_finished
        assert (out / r.report).is_file() and (out / r.report).with_name("history.png").is_file()
    index = (out / "report" / "index.html").read_text()
    assert all(f">{t}</a>" in index and f"{t}/index.html" in index for t in config.tasks)

    # the baselines beside each result: the search's best is the stored best, the target has gain 0
    for r in summary.results:
        names = [b["name"] for b in r.baselines["rows"]]
        assert names == ["target", "best-single", "add-all", "global-lambda", "search-best"]
        by = {b["name"]: b for b in r.baselines["rows"]}
        assert by["search-best"]["trial"] == r.best_trial
        assert by["search-best"]["objective_heldout"] == pytest.approx(r.best_score_heldout)
        assert by["target"]["objective_heldout"] == pytest.approx(r.target_score_heldout)
        assert r.baselines["best_vs_single_ci"] is not None
    assert "baselines (held-out gain" in index

    # one model for both tasks: the ingredients are each task's multi-task model (zoo v4) or target
    multi = summary.multi
    assert multi is not None and multi.n_finished == TRIALS and "multitask/index.html" in index
    # selected on one half of validation, reported on the other (the multi-task models trained on train)
    assert multi.search_from == "validation" and "the other half of GLUE validation" in index
    models = load_manifest(tiny_zoo).get("multitask") or {}
    refs = {models.get(t, demo.TARGET_FMT.format(task=t)) for t in TASKS}
    assert {i["repo_id"] for i in multi.ingredients} <= refs
    assert multi.baselines is not None and multi.baselines["rows"][0]["coefficients"] == {}
    best = leaderboard.study_best(study=multi.study, db_url=db_url)
    assert best["trial_number"] == multi.best_trial and best["objective"] == "normalized-mean"
    for t in TASKS:
        assert multi.best_scores[t] == best["scores"][t] and multi.best_scores[t]["heldout"] is not None
        assert multi.finetuned_scores[t]["heldout"] == best["reference_scores"][t]["score_heldout"]
    assert multi.best_normalized["search"] == pytest.approx(best["score_search"])
    assert multi.best_normalized["heldout"] == pytest.approx(best["score_heldout"])
    assert multi.base_normalized["search"] == pytest.approx(best["target_score_search"])
    assert set(multi.baseline_scores) == set(TASKS) and multi.baseline_normalized["heldout"] is not None

    # rerun: everything is reused, no new trial, no duplicate row
    studies = [r.study for r in summary.results] + [multi.study]
    before = {s: len(leaderboard.query(db_url=db_url, study=s)) for s in studies}
    again = demo.run_demo(config)
    assert [r.best_score_search for r in again.results] == [r.best_score_search for r in summary.results]
    assert again.multi.best_normalized == multi.best_normalized
    assert {s: len(leaderboard.query(db_url=db_url, study=s)) for s in studies} == before
    assert again.timings["zoo_s"] < 5

    # the command prints the table and ends with one JSON object
    capsys.readouterr()
    assert (
        demo.main(
            [
                *("--out", str(out), "--zoo", str(tiny_zoo), "--trials", str(TRIALS), "--top-k", "2"),
                *("--tasks", ",".join(TASKS), "--search-size", str(SEARCH_SIZE), "--quiet"),
                *("--multi-trials", str(TRIALS), "--multi-search-size", str(SEARCH_SIZE)),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.strip().splitlines()
    assert "target vs best composition" in "\n".join(printed)
    assert "one model for all tasks" in "\n".join(printed)
    last = json.loads(printed[-1])
    assert set(last["tasks"]) == set(config.tasks)
    assert set(last["tasks"]["sst2"]["baselines"]["rows"]) == {
        "target",
        "best-single",
        "add-all",
        "global-lambda",
        "search-best",
    }
    assert last["multitask"]["normalized_mean"]["best"] == pytest.approx(multi.best_normalized)
