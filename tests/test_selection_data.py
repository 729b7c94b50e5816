"""Selection data the target never saw: finetune leaves the search split out and records it, the validation
halves of `--search-from validation`, and the contamination warning for a target without that record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

import search.finetune
from search.errors import DataError, SearchError
from search.finetune import finetune
from search.scoring.contamination import bootstrap_scores, contamination_check
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer, ScoreResult
from search.scoring.settings import ScorerSettings
from search.screen.run import check_target
from search.study.config import SearchConfig, default_study_name
from search.study.live import load_splits
from search.tasks.data import load_split, validation_halves
from search.tasks.glue import get_task
from search.tasks.provenance import (
    SEARCH_SPLIT_KEY,
    recorded_search_split,
    records_split,
    search_split_record,
    training_rows,
)
from tests.search_world import taskvec

BASE = ("hub", "pico", "t5-pico")


def _base(zoo: Path) -> Path:
    return zoo.joinpath(*BASE)


# --- finetune leaves the search split out ---------------------------------------------------------------


def test_finetune_trains_on_train_minus_the_search_split_and_records_it(
    tiny_zoo: Path, tmp_path: Path, monkeypatch
) -> None:
    torch.set_num_threads(1)
    data = tiny_zoo / "glue"
    trained: list[pd.DataFrame] = []
    real_pairs = search.finetune.task_pairs

    def recording_pairs(spec, frame):  # what the real finetune hands its training loop
        trained.append(frame.copy())
        return real_pairs(spec, frame)

    monkeypatch.setattr(search.finetune, "task_pairs", recording_pairs)
    out = finetune(
        base=_base(tiny_zoo), task="sst2", data_dir=data, out=tmp_path / "clean", steps=2, progress=False
    )
    split = load_split("sst2", split="search", data_dir=data, size=None, seed=0)
    train = pd.read_parquet(data / "sst2" / "train-00000-of-00001.parquet")
    rows = trained[-1]
    assert not set(rows["idx"]) & set(split.examples["idx"])
    assert set(rows["idx"]) == set(train["idx"]) - set(split.examples["idx"])  # all the rest is used
    config = json.loads((out / "config.json").read_text())
    assert config[SEARCH_SPLIT_KEY] == {
        "task": "sst2",
        "source": "train",
        "seed": 0,
        "size": len(split),
        "fingerprint": split.fingerprint,
    }
    assert records_split(recorded_search_split(out), split)
    card = (out / "README.md").read_text()
    assert f"Search split excluded from training: sst2 {split.fingerprint}" in card.splitlines()
    assert f"train examples: {len(train) - len(split)}" in card

    # The opt-out trains on all of train and records nothing, even from a base that recorded a split.
    loud = finetune(
        base=out,
        task="sst2",
        data_dir=data,
        out=tmp_path / "all",
        steps=1,
        include_search_split=True,
        progress=False,
    )
    assert set(trained[-1]["idx"]) == set(train["idx"])
    assert SEARCH_SPLIT_KEY not in json.loads((loud / "config.json").read_text())
    assert recorded_search_split(loud) is None
    assert "Search split not excluded" in (loud / "README.md").read_text()


def test_training_rows_follow_the_search_size_and_source(tiny_zoo: Path) -> None:
    data = tiny_zoo / "glue"
    small = load_split("rte", split="search", data_dir=data, size=50, seed=3)
    rows, exclusion = training_rows(
        task="rte", data_dir=data, search_size=50, split_seed=3, max_train=100, seed=1
    )
    assert len(rows) == 100 and not set(rows["idx"]) & set(small.examples["idx"])
    assert exclusion.record == search_split_record(small, seed=3)
    # From validation, nothing is taken out of train; the record names the validation half.
    val_rows, val = training_rows(task="rte", data_dir=data, search_from="validation")
    assert len(val_rows) == len(pd.read_parquet(data / "rte" / "train-00000-of-00001.parquet"))
    half = load_split("rte", split="search", data_dir=data, source="validation")
    assert val.record is not None and val.record["source"] == "validation"
    assert val.record["fingerprint"] == half.fingerprint


def test_a_train_wholly_inside_its_search_split_is_one_clear_error(tiny_zoo: Path, tmp_path: Path) -> None:
    (tmp_path / "rte").mkdir()
    train = pd.read_parquet(tiny_zoo / "glue" / "rte" / "train-00000-of-00001.parquet").iloc[:150]
    train.to_parquet(tmp_path / "rte" / "train-00000-of-00001.parquet")  # search_size(150) is all 150
    with pytest.raises(DataError, match="all 150 train rows are in the search split"):
        training_rows(task="rte", data_dir=tmp_path)
    assert len(training_rows(task="rte", data_dir=tmp_path, include_search_split=True)[0]) == 150


# --- the validation halves ------------------------------------------------------------------------------


def test_validation_halves_are_disjoint_stable_stratified_and_fingerprinted(tiny_zoo: Path) -> None:
    data = tiny_zoo / "glue"
    validation = pd.read_parquet(data / "cola" / "validation-00000-of-00001.parquet")
    search = load_split("cola", split="search", data_dir=data, source="validation")
    heldout = load_split("cola", split="heldout", data_dir=data, source="validation")
    s_idx, h_idx = set(search.examples["idx"]), set(heldout.examples["idx"])
    assert not s_idx & h_idx and s_idx | h_idx == set(validation["idx"])
    assert len(search) == len(validation) // 2 and (search.source, heldout.source) == ("validation",) * 2
    again = load_split("cola", split="search", data_dir=data, source="validation")
    assert again.fingerprint == search.fingerprint and again.examples.equals(search.examples)
    # each half keeps validation's label shares (to one example)
    for half in (search, heldout):
        assert abs(half.examples["label"].mean() - validation["label"].mean()) <= 1 / len(half) + 1e-9
    fingerprints = {
        search.fingerprint,
        heldout.fingerprint,
        load_split("cola", split="search", data_dir=data).fingerprint,
        load_split("cola", split="heldout", data_dir=data).fingerprint,
        load_split("cola", split="search", data_dir=data, source="validation", seed=1).fingerprint,
    }
    assert len(fingerprints) == 5  # every split is told apart, another seed gives other halves
    sub = load_split("cola", split="search", data_dir=data, source="validation", size=40)
    assert len(sub) == 40 and set(sub.examples["idx"]) <= s_idx
    with pytest.raises(DataError, match="search half"):
        load_split("cola", split="search", data_dir=data, source="validation", size=len(search) + 1)
    with pytest.raises(DataError, match="unknown search source"):
        load_split("cola", split="search", data_dir=data, source="test")  # type: ignore[arg-type]


def test_validation_halves_of_labels() -> None:
    labels = np.array([0] * 30 + [1] * 71)
    first, second = validation_halves(labels, seed=4)
    assert len(first) == 50 and len(second) == 51 and not set(first) & set(second)
    assert (labels[first] == 1).sum() in (35, 36)
    assert np.array_equal(first, validation_halves(labels, seed=4)[0])


def test_search_from_is_a_setting_of_the_study_and_its_rows(tiny_zoo: Path) -> None:
    config = SearchConfig(task="rte", target="t", data_dir=tiny_zoo / "glue", search_from="validation")
    splits = load_splits(config)
    expected = load_split("rte", split="heldout", data_dir=tiny_zoo / "glue", source="validation")
    assert splits.heldout["rte"].fingerprint == expected.fingerprint
    train = SearchConfig(task="rte", target="t")
    assert default_study_name(train, target_revision="a" * 40) != default_study_name(
        SearchConfig(task="rte", target="t", search_from="validation"), target_revision="a" * 40
    )
    with pytest.raises(SearchError, match="--search-from"):
        SearchConfig(task="rte", target="t", search_from="test").validate()
    settings = dict(mode="rank", order_seed=0, max_input_length=512, autocast=None, label_words=["a", "b"])
    settings.update(split_seed=0, data="hub", search_size=200)
    assert "search_from" not in ScorerSettings(**settings).to_dict()  # old rows' stored form
    assert ScorerSettings.from_dict(settings).search_from == "train"
    stored = ScorerSettings(**settings, search_from="validation").to_dict()
    assert ScorerSettings.from_dict(stored).search_from == "validation"


# --- the contamination statistic ------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["cola", "mrpc", "sst2", "rte"])
def test_bootstrap_scores_recompute_the_tasks_metric(task: str) -> None:
    spec = get_task(task)
    rng = np.random.default_rng(7)
    labels = rng.choice(spec.label_ids, 60)
    predictions = np.where(rng.random(60) < 0.2, -1, rng.choice(spec.label_ids, 60))  # with invalid outputs
    scores = bootstrap_scores(task=task, labels=labels, predictions=predictions, resamples=5, seed=1)
    assert scores[0] == pytest.approx(spec.compute_metrics(labels, predictions)["score"])
    again = bootstrap_scores(task=task, labels=labels, predictions=predictions, resamples=5, seed=1)
    assert np.array_equal(scores, again)
    draws = np.random.default_rng(1).integers(0, 60, size=(5, 60))  # the same seeded draws
    expected = [spec.compute_metrics(labels[row], predictions[row])["score"] for row in draws]
    assert list(scores[1:]) == pytest.approx(expected)


def test_contamination_check_flags_a_gap_the_sizes_do_not_explain() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    right = np.where(rng.random(400) < 0.7, labels, 1 - labels)  # 70% on both splits: chance alone
    clean = contamination_check(
        task="sst2",
        search_labels=labels[:200],
        search_predictions=right[:200],
        heldout_labels=labels[200:],
        heldout_predictions=right[200:],
    )
    assert not clean.suspicious and 0 < clean.bound < 20
    # Accuracy's bootstrap standard errors are the binomial ones: about 2.33 * sqrt(2 * .21 / 200) * 100.
    assert clean.bound == pytest.approx(2.326 * np.sqrt(2 * 0.7 * 0.3 / 200) * 100, rel=0.15)
    memorised = contamination_check(
        task="sst2",
        search_labels=labels[:200],
        search_predictions=labels[:200],
        heldout_labels=labels[200:],
        heldout_predictions=right[200:],
    )
    assert memorised.suspicious and memorised.gap == pytest.approx(
        100 - 100 * np.mean(right[200:] == labels[200:])
    )
    line = memorised.warning(target="org/target")
    assert "\n" not in line and "org/target" in line and "--search-from validation" in line
    assert f"{memorised.score_search:.2f}" in line and f"{memorised.bound:.2f}" in line


def _result(labels: np.ndarray, predictions: np.ndarray) -> ScoreResult:
    return ScoreResult(
        task="sst2",
        split="search",
        mode="rank",
        n=len(labels),
        score=0.0,
        metrics={},
        predictions=predictions,
        margins=np.zeros(len(labels)),
        fingerprint="",
        labels=labels,
    )


def _random_label_data(zoo: Path, dest: Path, *, rows: int) -> Path:
    """A small sst2 train with shuffled labels (only memorising predicts them) and the zoo's validation."""
    (dest / "sst2").mkdir(parents=True)
    train = pd.read_parquet(zoo / "glue" / "sst2" / "train-00000-of-00001.parquet").iloc[:rows].copy()
    train["label"] = np.random.default_rng(0).permutation(train["label"].to_numpy())
    train.to_parquet(dest / "sst2" / "train-00000-of-00001.parquet")
    shutil.copy(zoo / "glue" / "sst2" / "validation-00000-of-00001.parquet", dest / "sst2")
    return dest


@pytest.mark.slow
def test_warning_fires_for_a_target_trained_on_all_of_train_and_not_for_a_clean_one(
    tiny_zoo: Path, tmp_path: Path, capsys
) -> None:
    torch.set_num_threads(1)
    data = _random_label_data(tiny_zoo, tmp_path / "data", rows=48)
    split = load_split("sst2", split="search", data_dir=data, size=16)
    heldout = load_split("sst2", split="heldout", data_dir=data)
    kwargs = dict(base=_base(tiny_zoo), task="sst2", data_dir=data, steps=60, lr=3e-3, batch_size=16)
    checks = {}
    for name, include in (("all", True), ("clean", False)):
        out = finetune(
            out=tmp_path / name, search_size=16, include_search_split=include, progress=False, **kwargs
        )
        model, tokenizer = load_seq2seq(out)
        search = Scorer(model, tokenizer, split, mode="rank").score()
        checks[name] = check_target(
            target=name,
            target_dir=out,
            split=split,
            search=search,
            heldout=lambda m=model, t=tokenizer: Scorer(m, t, heldout, mode="rank").score(),
        )
        if name == "clean":  # its record vouches for it, so nothing is scored; the statistic agrees
            assert checks[name] is None
            other = Scorer(model, tokenizer, heldout, mode="rank").score()
            checks[name] = contamination_check(
                task="sst2",
                search_labels=search.labels,
                search_predictions=search.predictions,
                heldout_labels=other.labels,
                heldout_predictions=other.predictions,
            )
    assert checks["all"].suspicious and not checks["clean"].suspicious
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("warning: all scores")
        and "--search-from validation" in lines[0]
    )


def test_check_target_is_silent_when_the_gap_is_chance(tmp_path: Path, tiny_zoo: Path, capsys) -> None:
    split = load_split("sst2", split="search", data_dir=tiny_zoo / "glue")
    labels = split.examples["label"].to_numpy()
    noisy = np.where(np.random.default_rng(0).random(len(labels)) < 0.7, labels, 1 - labels)
    (tmp_path / "config.json").write_text("{}")
    check = check_target(
        target="t",
        target_dir=tmp_path,
        split=split,
        search=_result(labels, noisy),
        heldout=lambda: _result(labels[::-1], noisy[::-1]),
    )
    assert check is not None and not check.suspicious and capsys.readouterr().err == ""
    halves = load_split("sst2", split="search", data_dir=tiny_zoo / "glue", source="validation")
    never = check_target(
        target="t", target_dir=tmp_path, split=halves, search=_result(labels, labels), heldout=None
    )
    assert never is None  # from validation there is nothing to check (and nothing is scored)


# --- end to end -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_screen_from_validation_end_to_end(synced_db) -> None:
    out = taskvec(
        "screen", "--task", "sst2", "--target", "pico/t5-pico-sst2", "--data", str(synced_db.data),
        "--search-from", "validation", "--lambdas", "0.5", "--limit", "1", "--json", "--db", synced_db.url,
        home=synced_db.home,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)
    half = load_split("sst2", split="search", data_dir=synced_db.data, source="validation")
    assert len(rows) == 1 and rows[0]["split_fingerprint"] == half.fingerprint
    assert rows[0]["scorer"]["search_from"] == "validation" and rows[0]["scorer"]["search_size"] == len(half)
    assert "warning" not in out.stderr
    found = taskvec(
        "search", "--task", "sst2", "--target", "pico/t5-pico-sst2", "--data", str(synced_db.data),
        "--search-from", "validation", "--top-k", "1", "--trials", "1", "--no-pruning", "--heldout-top", "0",
        "--json", "--db", synced_db.url, "--storage", synced_db.storage, home=synced_db.home,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
    name = json.loads(found.stdout.splitlines()[-1])["study_name"]
    context = optuna.load_study(study_name=name, storage=synced_db.storage).user_attrs["taskvec"]
    heldout = load_split("sst2", split="heldout", data_dir=synced_db.data, source="validation")
    assert context["scorer"]["search_from"] == "validation"
    assert context["split_fingerprints"] == {"search": half.fingerprint, "heldout": heldout.fingerprint}
    bad = taskvec(
        "screen", "--task", "sst2", "--target", "pico/t5-pico-sst2", "--data", str(synced_db.data),
        "--search-from", "test", "--db", synced_db.url, home=synced_db.home,
    )  # fmt: skip
    assert bad.returncode == 1 and "unknown search source" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
