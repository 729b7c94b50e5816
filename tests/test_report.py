"""search.leaderboard.report on a real Optuna study (SQLite) and real leaderboard rows (Alembic-migrated SQLite).

The study's objective is a plain function of its coefficients, so these tests check the report's own
logic (files, importance, HTML, errors) in a second; the end-to-end report on models from the zoo runs in
tests/test_demo.py.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import optuna
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from registry.db import dispose_engines, session_scope
from search.cli import app
from search.errors import SearchError
from search.leaderboard import plots, report
from search.study import lambda_param, use_param
from search.tables import LeaderboardRow

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPOS = ("pico/helpful", "pico/useless")
TARGET_SEARCH = 60.0


def _objective_and_rows(study_name: str, rows: list[dict]):
    """A study objective where only the first coefficient matters, recording leaderboard rows."""

    def objective(trial: optuna.Trial) -> float:
        coefs = [trial.suggest_float(f"coef_{i}", 0.0, 1.0) for i in range(len(REPOS))]
        score = TARGET_SEARCH + 20.0 * coefs[0]
        rows.append(
            {
                "task": "sst2",
                "study": study_name,
                "trial_number": trial.number,
                "score_search": score,
                "coefs": coefs,
            }
        )
        return score

    return objective


@pytest.fixture()
def study_env(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    db_url = f"sqlite:///{tmp_path / 'taskvec.db'}"
    name = "sst2-report-test"
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    recorded: list[dict] = []
    study.optimize(_objective_and_rows(name, recorded), n_trials=12)
    with session_scope(db_url) as session:
        for r in recorded:
            session.add(
                LeaderboardRow(
                    task=r["task"],
                    study=r["study"],
                    trial_number=r["trial_number"],
                    state="complete",
                    score_search=r["score_search"],
                    score_heldout=r["score_search"] - 1.0 if r["trial_number"] < 3 else None,
                    metrics={"search": {"accuracy": r["score_search"]}},
                    target_score_search=TARGET_SEARCH,
                    target_score_heldout=TARGET_SEARCH - 2.0,
                    target_repo="pico/target",
                    target_revision="t" * 40,
                    base_repo="pico/t5-pico",
                    base_revision="b" * 40,
                    ingredients=[
                        {"repo_id": repo, "revision": f"{i}" * 40, "coefficient": c}
                        for i, (repo, c) in enumerate(zip(REPOS, r["coefs"], strict=True))
                        if c > 0.2  # low coefficients excluded, as an inclusion flag would
                    ],
                    method="task_arithmetic",
                    method_options={},
                    scorer={"mode": "rank"},
                    split_fingerprints={"search": "s", "heldout": "h"},
                    scores={"sst2": {"search": r["score_search"], "heldout": None}},
                    objective="score",
                    constraints={},
                    pareto=False,
                    examples_scored=100,
                    worker="test-worker",
                )
            )
    yield {"storage": storage, "db_url": db_url, "study": name, "tmp": tmp_path}
    dispose_engines()


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, checking the signature and the chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    chunk = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(kind + chunk) == crc
    return struct.unpack(">II", chunk[:8])


def test_report_writes_plots_and_html(study_env) -> None:
    out = study_env["tmp"] / "report"
    index = report.write_report(
        study=study_env["study"], storage=study_env["storage"], db_url=study_env["db_url"], out=out
    )
    assert index == out / "index.html"
    for name in report.PLOT_FILES:
        width, height = _png_size(out / name)
        assert width > 200 and height > 100
    page = index.read_text()
    for name in report.PLOT_FILES:
        assert f'src="{name}"' in page
    # the leaderboard's top rows are listed with their ingredients, and the best trial's gain is shown
    assert "pico/helpful@" in page
    assert "test-worker" in page
    best = max(
        optuna.load_study(study_name=study_env["study"], storage=study_env["storage"]).trials,
        key=lambda t: t.value,
    )
    assert f"best trial (#{best.number})" in page
    assert f"{best.value - TARGET_SEARCH:+.2f}" in page
    # no temporary files left behind
    assert sorted(p.name for p in out.iterdir()) == sorted([*report.PLOT_FILES, "index.html"])


def test_importance_finds_the_coefficient_that_matters(study_env) -> None:
    study = optuna.load_study(study_name=study_env["study"], storage=study_env["storage"])
    imp = report.param_importances(study)
    assert imp.method == "fanova"
    assert max(imp.values, key=imp.values.get) == "coef_0"


def test_importance_is_over_effective_coefficients_of_a_taskvec_study() -> None:
    """`use:`/`lambda:` parameters become one coefficient per candidate (0 when left out)."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=2))
    study.set_user_attr("taskvec", {"candidates": [{"repo_id": r} for r in REPOS]})

    def objective(trial: optuna.Trial) -> float:
        coefs = []
        for repo in REPOS:
            use = trial.suggest_categorical(use_param(repo), [False, True])
            coefs.append(trial.suggest_float(lambda_param(repo), 0.0, 1.0) if use else 0.0)
        return TARGET_SEARCH + 20.0 * coefs[0]

    study.optimize(objective, n_trials=16)
    imp = report.param_importances(study)
    assert imp.method == "fanova"
    assert set(imp.values) <= set(REPOS)
    assert max(imp.values, key=imp.values.get) == "pico/helpful"


def test_importance_falls_back_on_few_trials(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: 10 * t.suggest_float("a", 0, 1) + 0 * t.suggest_float("b", 0, 1), n_trials=5)
    imp = report.param_importances(study)
    assert imp.method == "spearman"
    assert imp.values["a"] == pytest.approx(1.0)  # the score is a monotone function of `a`
    assert list(imp.values)[0] == "a"


def test_unknown_study_and_unreachable_storage_are_one_line_errors(study_env) -> None:
    with pytest.raises(SearchError, match="no study named 'nope'"):
        report.write_report(
            study="nope", storage=study_env["storage"], db_url=study_env["db_url"], out=study_env["tmp"] / "x"
        )
    with pytest.raises(
        SearchError, match=r"cannot open Optuna storage postgresql://u:\*\*\*@127\.0\.0\.1:1/x"
    ):
        report.load_study(study="s", storage="postgresql://u:secret@127.0.0.1:1/x")


def test_study_without_completed_trials_is_an_error(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="empty", storage=storage, direction="maximize")
    with pytest.raises(SearchError, match="no completed trial"):
        report.write_report(study="empty", storage=storage, db_url=None, out=tmp_path / "r")


def test_report_command(study_env) -> None:
    out = study_env["tmp"] / "cli-report"
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--study",
            study_env["study"],
            "--storage",
            study_env["storage"],
            "--db",
            study_env["db_url"],
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file()
    assert str(out / "index.html") in result.output


def test_page_names_every_score_counts_trials_and_gives_the_dashboard_command(study_env) -> None:
    index = report.write_report(
        study=study_env["study"],
        storage=study_env["storage"],
        db_url=study_env["db_url"],
        out=study_env["tmp"],
    )
    page = index.read_text()
    footnote = "SST-2: accuracy ×100; search = a stratified sample of GLUE train, held-out = GLUE validation"
    assert f"Scores: {footnote}." in page
    assert "12 finished trials: 12 completed, 0 pruned" in page
    assert (
        f"<code>optuna-dashboard {study_env['storage']}</code>" in page and "&lt;storage URL&gt;" not in page
    )
    for name in report.PLOT_FILES:  # a caption that says what the plot shows, not its file name
        assert f"<figcaption>{name}" not in page
    assert "Optimisation history: each completed trial" in page
    assert "Optuna&#x27;s fANOVA (seeded) over 12 completed trials" in page


def test_history_draws_pruned_trials_at_the_prefix_they_stopped_on_and_labels_the_base() -> None:
    study = optuna.create_study(direction="maximize")
    for number in range(6):
        trial = study.ask()
        x = trial.suggest_float("a", 0, 1)
        if number % 2:
            trial.report(10.0 + number, 64)
            trial.report(20.0 + number, 128)  # stopped after its second rung
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, 50.0 + x)
    done = report.completed_trials(study)
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    fig = plots.history_figure(
        done, pruned=pruned, study="s", target_search=40.0, maximize=True, target_label="base alone"
    )
    (ax,) = fig.axes
    drawn = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    (label,) = [k for k in drawn if k.startswith(plots.PRUNED_LABEL)]
    assert drawn[label] == [[1.0, 21.0], [3.0, 23.0], [5.0, 25.0]] and label.endswith(": 128 examples")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["completed trial", label, "best so far", "base alone (40.0)"]


def test_importance_is_signed_and_counts_its_trials() -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: -10 * t.suggest_float("a", 0, 1) + 0 * t.suggest_float("b", 0, 1), n_trials=5)
    imp = report.param_importances(study)
    assert (imp.method, imp.n_trials) == ("spearman", 5)
    assert imp.values["a"] == pytest.approx(-1.0) and list(imp.values)[0] == "a"  # by magnitude
    fig = plots.importance_figure(imp.values, method=imp.method, study="s" * 150, n_trials=imp.n_trials)
    (ax, *_) = fig.axes
    assert ax.get_xlabel() == "Spearman rho of the coefficient with the score (n = 5 trials)"
    assert min(p.get_width() for p in ax.patches) == pytest.approx(-1.0)
    title = fig.get_suptitle().splitlines()
    assert title[0] == "Coefficient importance (Spearman rho)" and max(map(len, title)) <= plots.TITLE_WIDTH


def test_multitask_page_calls_the_target_the_base(study_env) -> None:
    with session_scope(study_env["db_url"]) as session:
        session.execute(update(LeaderboardRow).values(task="mrpc,rte", objective="mean"))
    page = report.write_report(
        study=study_env["study"],
        storage=study_env["storage"],
        db_url=study_env["db_url"],
        out=study_env["tmp"],
    ).read_text()
    assert "<td>base alone</td>" in page and "gain over the base alone" in page
    assert "MRPC: mean(F1, accuracy) ×100, RTE: accuracy ×100; score = mean of the tasks&#x27; scores" in page
