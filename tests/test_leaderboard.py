"""Leaderboard rows on a real SQLite database: idempotent upserts, queries, summary, CSV/JSON, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from registry.db import dispose_engines, session_scope
from search import leaderboard as lb
from search.errors import SearchError
from search.study import records
from search.tables import LeaderboardRow
from tests.search_world import leaderboard_row


@pytest.fixture()
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'taskvec.db'}"
    yield url
    dispose_engines()


def test_upsert_is_idempotent_and_keeps_heldout(db_url):
    rows = [leaderboard_row("s1", n, 60.0 + n) for n in range(3)]
    assert records.upsert_rows(rows, db_url=db_url) == 3
    assert records.upsert_rows(rows, db_url=db_url) == 3
    got = lb.query(db_url=db_url, study="s1")
    assert [r["trial_number"] for r in got] == [2, 1, 0]  # best search score first
    assert records.existing_trial_numbers(study="s1", db_url=db_url) == {0, 1, 2}

    # A held-out score written later survives a re-upsert of the same trial (e.g. the final sync pass).
    with session_scope(db_url) as session:
        row = session.query(LeaderboardRow).filter_by(study="s1", trial_number=2).one()
        row.score_heldout = 70.0
    records.upsert_rows([leaderboard_row("s1", 2, 62.0)], db_url=db_url)
    best = lb.study_best(study="s1", db_url=db_url)
    assert best["trial_number"] == 2 and best["score_heldout"] == 70.0
    assert best["gain_heldout"] == pytest.approx(70.0 - 59.0)
    assert len(lb.query(db_url=db_url)) == 3


def test_query_filters_top_and_summary(db_url):
    records.upsert_rows([leaderboard_row("a", n, 50.0 + n, task="rte") for n in range(4)], db_url=db_url)
    records.upsert_rows(
        [leaderboard_row("b", n, 40.0 - n, task="mrpc", target=41.0) for n in range(3)], db_url=db_url
    )
    assert len(lb.query(db_url=db_url, task="rte")) == 4
    top = lb.query(db_url=db_url, top=2)
    assert [(r["task"], r["trial_number"]) for r in top] == [("mrpc", 0), ("mrpc", 1), ("rte", 3), ("rte", 2)]
    summary = {s["task"]: s for s in lb.summary(db_url=db_url)}
    assert summary["rte"]["best_score_search"] == 53.0 and summary["rte"]["n_rows"] == 4
    assert summary["rte"]["gain_search"] == pytest.approx(-7.0)
    assert summary["mrpc"]["gain_search"] == pytest.approx(-1.0)
    # Every JSON row carries the keys of the search issue's item 3.
    for key in (
        "task",
        "study",
        "trial_number",
        "score_search",
        "score_heldout",
        "metrics",
        "target_score_search",
        "target_score_heldout",
        "ingredients",
        "method",
        "scorer",
        "split_fingerprints",
        "worker",
        "created",
        "scores",
        "objective",
        "constraints",
        "pareto",
    ):
        assert key in top[0]
    assert set(top[0]["ingredients"][0]) == {"repo_id", "revision", "coefficient"}


def test_csv_round_trip(db_url):
    records.upsert_rows([leaderboard_row("a", 0, 55.5)], db_url=db_url)
    text = lb.to_csv(lb.query(db_url=db_url))
    (parsed,) = list(csv.DictReader(io.StringIO(text)))
    assert parsed["study"] == "a" and float(parsed["score_search"]) == 55.5
    assert parsed["ingredients"].startswith("pico/cand-1@cccccccccccc=0.5")


def test_get_row_errors(db_url):
    with pytest.raises(SearchError, match="no completed trial"):
        lb.get_row(study="nope", db_url=db_url)
    records.upsert_rows([leaderboard_row("a", 0, 55.5)], db_url=db_url)
    with pytest.raises(SearchError, match="no completed trial 7"):
        lb.get_row(study="a", trial=7, db_url=db_url)


def test_cli_json_and_table(db_url):
    records.upsert_rows([leaderboard_row("a", n, 50.0 + n) for n in range(3)], db_url=db_url)
    dispose_engines()
    cmd = [sys.executable, "-m", "search.cli", "leaderboard", "--db", db_url]
    out = subprocess.run([*cmd, "--json", "--top", "2"], capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    assert [r["trial_number"] for r in rows] == [2, 1]
    table = subprocess.run(cmd, capture_output=True, text=True, check=True, env={"COLUMNS": "250", **_env()})
    assert "rte" in table.stdout and "60.00 → 52.00" in table.stdout  # target → best on search
    bad = subprocess.run(
        [sys.executable, "-m", "search.cli", "export", "--study", "zzz", "--out", "x", "--db", db_url],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "no completed trial" in bad.stderr and "Traceback" not in bad.stderr


def _env() -> dict:
    return dict(os.environ)
