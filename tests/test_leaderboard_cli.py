"""From result to model in one step: `export --study STUDY#TRIAL` / `--task T --rank N`, the export command
that `search` and `leaderboard` print, `--top` on the table, unknown task or study as one line."""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from registry.db import dispose_engines
from search.cli import app
from search.cli._render import baselines_table, console, screening_table
from search.errors import SearchError
from search.leaderboard.queries import check_known, resolve_trial, split_key, summary
from search.study import records
from tests.search_world import SEARCH_SIZE, leaderboard_row, taskvec


@pytest.fixture()
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'taskvec.db'}"
    records.upsert_rows([leaderboard_row("a#x", n, 50.0 + n, task="rte") for n in range(3)], db_url=url)
    records.upsert_rows([leaderboard_row("b", n, 40.0 - n, task="mrpc") for n in range(2)], db_url=url)
    yield url
    dispose_engines()


def test_split_key():
    assert split_key("rte-x@1a2b-k16#15") == ("rte-x@1a2b-k16", 15)
    assert split_key("a#b#7") == ("a#b", 7)  # the last '#'
    assert split_key("a#b") == ("a#b", None)  # no trial number follows: the whole name
    assert split_key("plain") == ("plain", None)


def test_resolve_trial_by_key_and_by_rank(db_url):
    assert resolve_trial(study="a#x#1", trial=None, task=None, rank=None, db_url=db_url) == ("a#x", 1)
    assert resolve_trial(study="b", trial=1, task=None, rank=None, db_url=db_url) == ("b", 1)
    # Ranks count as the leaderboard does: best feasible search score first.
    assert resolve_trial(study=None, trial=None, task="rte", rank=None, db_url=db_url) == ("a#x", 2)
    assert resolve_trial(study=None, trial=None, task="rte", rank=3, db_url=db_url) == ("a#x", 0)
    ranked = summary(db_url=db_url, task="rte", top=3)
    assert [(r["rank"], r["trial_number"]) for r in ranked] == [(1, 2), (2, 1), (3, 0)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"study": "a#x#2", "trial": 1}, "already names trial 2; but --trial says 1"),
        ({"study": "a#x#2", "trial": 2}, "already names trial 2; give it once"),
        ({"task": "rte", "rank": 4}, "task 'rte' has 3 feasible rows on the leaderboard; no rank 4"),
        ({"task": "rte", "trial": 1}, "--trial goes with --study"),
        ({"study": "b", "rank": 1}, "--rank goes with --task"),
        ({}, "name one of --study"),
        ({"study": "b", "task": "rte"}, "name one of --study"),
        ({"study": "zzz"}, "study 'zzz' has no completed trial on the leaderboard (known studies: a#x, b)"),
        ({"task": "foo"}, "task 'foo' has no completed trial on the leaderboard (known tasks: mrpc, rte)"),
    ],
)
def test_resolve_trial_errors(db_url, kwargs, message):
    args = {"study": None, "trial": None, "task": None, "rank": None, **kwargs}
    with pytest.raises(SearchError) as err:
        resolve_trial(**args, db_url=db_url)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_check_known_pairs_and_empty(db_url, tmp_path):
    with pytest.raises(SearchError, match="study 'b' has no rows for task 'rte'"):
        check_known(task="rte", study="b", db_url=db_url)
    check_known(task="mrpc", study="b", db_url=db_url)
    records.upsert_rows([leaderboard_row(f"s{n}", 0, 1.0, task="rte") for n in range(6)], db_url=db_url)
    with pytest.raises(SearchError, match=r"known studies: a#x, b, s0, s1, s2, \.\.\. \(8 in all\)"):
        check_known(task=None, study="zzz", db_url=db_url)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def test_leaderboard_unknown_task_or_study_fails(db_url):
    for args in (("--task", "foo"), ("--study", "zzz"), ("--task", "foo", "--json")):
        res = _invoke("leaderboard", "--db", db_url, *args)
        assert res.exit_code != 0 and isinstance(res.exception, SearchError), res.output
        assert "┃" not in res.output  # no empty table


def test_leaderboard_table_top_and_export_hint(db_url):
    res = _invoke("leaderboard", "--db", db_url, "--top", "2")
    assert res.exit_code == 0, res.output
    body = res.output.splitlines()
    assert sum("│ rte " in line for line in body) == 2 and sum("│ mrpc " in line for line in body) == 2
    hints = [line for line in body if line.startswith("export: ")]
    assert hints == [
        f"export: taskvec export --study 'b#0' --out OUT --db {db_url}  # mrpc",
        f"export: taskvec export --study 'a#x#2' --out OUT --db {db_url}  # rte",
    ]
    one = _invoke("leaderboard", "--db", db_url, "--task", "rte")
    assert one.output.splitlines()[-1] == f"export: taskvec export --study 'a#x#2' --out OUT --db {db_url}"
    assert sum("│ rte " in line for line in one.output.splitlines()) == 1  # default: the best row only


def test_table_fits_100_columns_with_short_ids_and_wide_keeps_them_whole(db_url):
    long_study = "rte-t5-pico-rte@0123abcd-task_arithmetic-k4-tpe-5d4b4d"
    row = leaderboard_row(long_study, 7, 99.0, task="rte")
    row["ingredients"] = [
        {"repo_id": "pico/t5-pico-food-sst2-a", "revision": "c" * 40, "coefficient": 0.5},
        {"repo_id": "other/helper", "revision": "d" * 40, "coefficient": 1.25},
    ]
    records.upsert_rows([row], db_url=db_url)
    narrow = CliRunner().invoke(app, ["leaderboard", "--db", db_url, "--task", "rte"], env={"COLUMNS": "100"})
    assert narrow.exit_code == 0, narrow.output
    table = [line for line in narrow.output.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 100  # (the export line below is a command)
    # the target's organisation is dropped, another one kept; a space before the coefficient
    assert "t5-pico-food-sst2-a ×0.50" in narrow.output and "pico/t5-pico-food" not in narrow.output
    assert "other/helper ×1.25" in narrow.output
    wide = CliRunner().invoke(
        app, ["leaderboard", "--db", db_url, "--task", "rte", "--wide"], env={"COLUMNS": "100"}
    )
    assert wide.exit_code == 0, wide.output
    assert f"{long_study}#7" in wide.output and "pico/t5-pico-food-sst2-a ×0.50" in wide.output
    assert max(len(line) for line in wide.output.splitlines() if line[:1] in "┏┃┡│└") > 100


def test_tables_name_the_metric_and_split_of_every_score(db_url):
    validation = leaderboard_row("v", 0, 30.0, task="cola")
    validation["scorer"] = {**validation["scorer"], "search_from": "validation"}
    records.upsert_rows([validation], db_url=db_url)
    board = _invoke("leaderboard", "--db", db_url)
    assert board.exit_code == 0, board.output
    assert (
        "CoLA: Matthews corr. ×100, MRPC: mean(F1, accuracy) ×100, RTE: accuracy ×100; "
        "search = one stratified half of GLUE validation, held-out = the other half of GLUE validation; "
        "search = a stratified sample of GLUE train, held-out = GLUE validation"
    ) in " ".join(board.output.split())  # rich may wrap the footnote
    one = _invoke("leaderboard", "--db", db_url, "--task", "rte", "--pareto")
    assert "no Pareto-optimal rows" in one.output  # no table, so no footnote either
    pareto = leaderboard_row("p", 0, 40.0, task="mrpc,rte")
    pareto |= {"objective": "pareto", "pareto": True}
    pareto["scores"] = {"mrpc": {"search": 41.0, "heldout": None}, "rte": {"search": 39.0, "heldout": None}}
    records.upsert_rows([pareto], db_url=db_url)
    front = _invoke("leaderboard", "--db", db_url, "--pareto")
    assert (
        "MRPC: mean(F1, accuracy) ×100, RTE: accuracy ×100; score = mean of the tasks' scores (the front"
        in (" ".join(front.output.split()))
    )


def test_export_unknown_study_is_one_line_through_main(db_url, tmp_path):
    out = taskvec("export", "--study", "zzz#3", "--out", str(tmp_path / "o"), "--db", db_url, home=tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert errors == ["error: study 'zzz' has no completed trial on the leaderboard (known studies: a#x, b)"]


# --- on the tiny zoo: one tiny search per module, then the printed commands ---------------------------------


@pytest.fixture(scope="module")
def searched(screened_db):
    out = taskvec(
        "search", "--task", "sst2", "--target", "pico/t5-pico-sst2", "--data", str(screened_db.data),
        "--search-size", str(SEARCH_SIZE), "--top-k", "2", "--trials", "4", "--no-pruning",
        "--heldout-top", "0", "--db", screened_db.url, "--storage", screened_db.storage,
        home=screened_db.home,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return screened_db, out.stdout


@pytest.mark.slow
def test_search_and_leaderboard_print_the_same_working_export_command(searched, tmp_path):
    db, search_out = searched
    hint = search_out.splitlines()[-1]
    assert hint.startswith("export: taskvec export --study '") and hint.endswith(f" --db {db.url}")
    board = taskvec("leaderboard", "--task", "sst2", "--db", db.url, home=db.home)
    assert board.returncode == 0 and board.stdout.splitlines()[-1] == hint, board.stdout + board.stderr
    argv = shlex.split(hint.removeprefix("export: "))
    argv[argv.index("OUT")] = str(tmp_path / "by-key")
    done = taskvec(*argv[1:], home=db.home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"exported: {tmp_path / 'by-key'}"
    by_rank = taskvec("export", "--task", "sst2", "--rank", "1", "--out", str(tmp_path / "by-rank"),
                      "--db", db.url, home=db.home)  # fmt: skip
    assert by_rank.returncode == 0, by_rank.stderr[-2000:]
    key = (tmp_path / "by-key" / "recipe.yaml").read_text()
    assert (tmp_path / "by-rank" / "recipe.yaml").read_text() == key


def test_baselines_and_screening_tables_name_their_scores():
    row = {"name": "target", "coefficients": {}, "objective_search": 60.0, "objective_heldout": 58.0}
    multi = {"study": "s", "tasks": ["mrpc", "rte"], "objective": "normalized-mean", "rows": [row]}
    with console.capture() as captured:
        console.print(baselines_table({**multi, "search_from": "validation"}))
        console.print(screening_table([], task="cola", target="t"))
    text = " ".join(captured.get().split())
    assert "base alone" in text
    assert (
        "MRPC: mean(F1, accuracy) ×100, RTE: accuracy ×100; score = mean of each task's score / its "
        "fine-tuned model's score, ×100; search = one stratified half of GLUE validation"
    ) in text
    assert "CoLA: Matthews corr. ×100; all on the search split = a stratified sample of GLUE train" in text
