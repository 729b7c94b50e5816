"""The `leaderboard_scores` SQL view (migration 0006): one row per trial, each task's scores as columns,
the same numbers `taskvec leaderboard --json` gives, on SQLite (sqlite3 and pandas, as the README shows)
and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, text

from registry.db import dispose_engines, upgrade
from search.study import SearchConfig, run_search
from search.study.records import query, upsert_rows
from tests.search_world import SEARCH_SIZE, leaderboard_row

VIEW = "leaderboard_scores"
TASKS = ("mrpc", "rte", "cola", "sst2")


def _rows() -> list[dict]:
    """Synthetic rows: two tasks, a held-out score with its interval on one, a row validation-searched."""
    out = [leaderboard_row("rte-s", n, 50.0 + n, task="rte") for n in range(3)]
    out[2] |= {
        "score_heldout": 55.0,
        "scores": {"rte": {"search": 52.0, "heldout": 55.0}},
        "gain_ci": {"lo": -1.5, "hi": 7.5, "gain": 3.0, "level": 0.95},
    }
    mrpc = leaderboard_row("mrpc-s", 0, 70.0, task="mrpc")
    mrpc["scorer"] = {**mrpc["scorer"], "search_from": "validation"}
    return [*out, mrpc]


def _check_view(url: str) -> None:
    upgrade(url)
    upsert_rows(_rows(), db_url=url)
    engine = create_engine(url)
    try:
        assert VIEW in inspect(engine).get_view_names()
        with engine.connect() as conn:
            got = {
                (r.study, r.trial_number): r
                for r in conn.execute(text(f"SELECT * FROM {VIEW}"))  # noqa: S608 (a constant)
            }
    finally:
        engine.dispose()
    assert len(got) == 4  # one row per trial
    best = got[("rte-s", 2)]
    assert (best.study_trial, best.task, best.rte_search, best.rte_heldout) == ("rte-s#2", "rte", 52.0, 55.0)
    assert best.mrpc_search is None and best.sst2_heldout is None  # not this study's task
    assert (best.gain_ci_lo, best.gain_ci_hi, best.gain_ci_level) == (-1.5, 7.5, 0.95)
    assert best.gain_heldout == pytest.approx(55.0 - 59.0) and best.n_ingredients == 1
    assert got[("rte-s", 0)].gain_ci_lo is None and got[("rte-s", 0)].rte_heldout is None
    assert got[("rte-s", 0)].search_from == "train" and got[("mrpc-s", 0)].search_from == "validation"
    assert got[("mrpc-s", 0)].mrpc_search == 70.0


def test_view_on_sqlite(tmp_path: Path) -> None:
    try:
        _check_view(f"sqlite:///{tmp_path / 'taskvec.db'}")
    finally:
        dispose_engines()


def test_view_on_postgresql(postgres_db: str) -> None:
    _check_view(postgres_db)


@pytest.mark.slow
def test_view_after_a_tiny_search_agrees_with_the_leaderboard(screened_db) -> None:
    """The README's queries, sqlite3 and pandas, on a real study: the view's numbers are the rows'."""
    config = SearchConfig(
        task="sst2",
        target="pico/t5-pico-sst2",
        data_dir=screened_db.data,
        top_k=2,
        n_trials=4,
        pruning=False,
        heldout_top_n=1,
        storage=screened_db.storage,
        db_url=screened_db.url,
        search_size=SEARCH_SIZE,
        vector_cache=screened_db.cache,
    )
    study = run_search(config, progress=False).study_name
    rows = {r["trial_number"]: r for r in query(db_url=screened_db.url, study=study)}
    dispose_engines()
    path = screened_db.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        plain = conn.execute(
            f"SELECT trial_number, sst2_search, sst2_heldout, gain_heldout FROM {VIEW} "  # noqa: S608
            "WHERE study = ? ORDER BY sst2_search DESC",
            (study,),
        ).fetchall()
    with sqlite3.connect(path) as conn:
        frame = pd.read_sql_query(f"SELECT * FROM {VIEW} WHERE study = ?", conn, params=(study,))  # noqa: S608
    assert len(plain) == len(rows) == len(frame) == 4
    for trial, search, heldout, gain in plain:
        row = rows[trial]
        assert search == pytest.approx(row["scores"]["sst2"]["search"])
        assert heldout == row["scores"]["sst2"]["heldout"] and gain == row["gain_heldout"]
    assert sum(v is not None for _, _, v, _ in plain) == 1  # --heldout-top 1
    assert {f"{t}_{s}" for t in TASKS for s in ("search", "heldout")} <= set(frame.columns)
    assert frame["search_from"].eq("train").all()
