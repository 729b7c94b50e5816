"""GLUE data loading: local parquet folders, the `datasets` path, splits, fingerprints, bad files."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from search.errors import DataError
from search.tasks import load_frame, load_split
from search.tasks.data import search_size, stratified_positions


def write_glue(
    root: Path, task: str = "mrpc", *, n_train: int = 600, n_val: int = 120, seed: int = 0
) -> Path:
    """A GLUE-layout folder with distinct train/validation texts (labels 70/30)."""
    rng = np.random.default_rng(seed)
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    pair = task in ("mrpc", "rte")
    for split, n in (("train", n_train), ("validation", n_val), ("test", 10)):
        frame = {"idx": np.arange(n)}
        if pair:
            frame["sentence1"] = [f"{split} first {i}" for i in range(n)]
            frame["sentence2"] = [f"{split} second {i}" for i in range(n)]
        else:
            frame["sentence"] = [f"{split} sentence {i}" for i in range(n)]
        frame["label"] = np.full(n, -1) if split == "test" else (rng.random(n) < 0.3).astype(np.int64)
        pd.DataFrame(frame).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    return root


def test_search_size_rule():
    assert search_size(150) == 150  # all of a small train set
    assert search_size(600) == 200  # 10% = 60, raised to the 200 floor
    assert search_size(3000) == 300
    assert search_size(67349) == 1000  # SST-2: capped


def test_stratified_positions_keep_proportions_and_are_seeded():
    labels = np.array([0] * 700 + [1] * 300)
    pos = stratified_positions(labels, size=101, seed=1)
    assert len(pos) == 101 == len(np.unique(pos))
    assert abs(int((labels[pos] == 1).sum()) - 30.3) < 1
    assert np.array_equal(pos, stratified_positions(labels, size=101, seed=1))
    assert not np.array_equal(pos, stratified_positions(labels, size=101, seed=2))


def test_search_split_is_deterministic_stratified_and_disjoint_from_heldout(tmp_path):
    write_glue(tmp_path, "mrpc")
    a = load_split("mrpc", split="search", data_dir=tmp_path)
    b = load_split("mrpc", split="search", data_dir=tmp_path)
    other_seed = load_split("mrpc", split="search", data_dir=tmp_path, seed=1)
    held = load_split("mrpc", split="heldout", data_dir=tmp_path)
    train = load_frame("mrpc", file_split="train", data_dir=tmp_path)

    assert len(a) == 200 and a.name == "search" and a.task == "mrpc"
    assert a.fingerprint == b.fingerprint and a.examples.equals(b.examples)
    assert other_seed.fingerprint != a.fingerprint
    assert abs(a.examples["label"].mean() - train["label"].mean()) < 0.01
    # Every search example is a train row; none is a validation row.
    train_rows = set(map(tuple, train.to_numpy().tolist()))
    assert all(tuple(r) in train_rows for r in a.examples.to_numpy().tolist())
    assert not set(a.examples["sentence1"]) & set(held.examples["sentence1"])
    # The held-out split is all of validation, in file order.
    assert len(held) == 120 and list(held.examples["idx"]) == list(range(120))
    assert held.fingerprint != a.fingerprint


def test_fingerprint_tracks_ids_texts_and_labels(tmp_path):
    write_glue(tmp_path, "sst2")
    base = load_split("sst2", split="heldout", data_dir=tmp_path).fingerprint
    path = tmp_path / "sst2" / "validation-00000-of-00001.parquet"
    frame = pd.read_parquet(path)
    for column, value in (("sentence", "changed"), ("label", 1 - frame.loc[5, "label"]), ("idx", 999)):
        edited = frame.copy()
        edited.loc[5, column] = value
        edited.to_parquet(path)
        assert load_split("sst2", split="heldout", data_dir=tmp_path).fingerprint != base
    frame.to_parquet(path)
    assert load_split("sst2", split="heldout", data_dir=tmp_path).fingerprint == base


def test_sizes_and_zoo_root_layout(tmp_path):
    write_glue(tmp_path / "glue", "cola")  # a pico-zoo root keeps GLUE under glue/
    small = load_split("cola", split="search", data_dir=tmp_path, size=50)
    assert len(small) == 50
    assert len(load_split("cola", split="heldout", data_dir=tmp_path, size=40)) == 40
    with pytest.raises(DataError, match="must be positive"):
        load_split("cola", split="search", data_dir=tmp_path, size=0)
    with pytest.raises(DataError, match="unknown split"):
        load_split("cola", split="validation", data_dir=tmp_path)


def test_test_split_may_have_unlabelled_rows_but_train_may_not(tmp_path):
    write_glue(tmp_path, "rte")
    assert (load_frame("rte", file_split="test", data_dir=tmp_path)["label"] == -1).all()
    path = tmp_path / "rte" / "train-00000-of-00001.parquet"
    frame = pd.read_parquet(path)
    frame.loc[3, "label"] = -1
    frame.to_parquet(path)
    with pytest.raises(
        DataError, match=r"train-00000-of-00001.parquet: label -1 \(row 3\) is not one of rte's ids"
    ):
        load_split("rte", split="search", data_dir=tmp_path)


def _edit_validation(root: Path, task: str, edit) -> None:
    path = root / task / "validation-00000-of-00001.parquet"
    edit(pd.read_parquet(path)).to_parquet(path)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda f: f.drop(columns=["sentence2"]), "missing column.s. sentence2 for task mrpc"),
        (
            lambda f: f.assign(label=f["label"] * 0 + 5),
            r"label 5 \(row 0\) is not one of mrpc's ids \(0, 1\)",
        ),
        (lambda f: f.iloc[:0], "no examples"),
        (lambda f: f.assign(sentence1=None), "missing values in column.s. sentence1"),
        (lambda f: f.assign(idx=0), "duplicate idx 0"),
        (lambda f: f.assign(label=f["label"].astype(float) + 0.5), "column 'label' is float64"),
    ],
)
def test_malformed_files_give_one_line_naming_the_file(tmp_path, edit, needle):
    write_glue(tmp_path, "mrpc")
    _edit_validation(tmp_path, "mrpc", edit)
    with pytest.raises(DataError, match=needle) as exc:
        load_split("mrpc", split="heldout", data_dir=tmp_path)
    message = str(exc.value)
    assert "validation-00000-of-00001.parquet" in message and "\n" not in message


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="no folder for task 'sst2'"):
        load_split("sst2", split="heldout", data_dir=tmp_path)
    (tmp_path / "sst2").mkdir()
    with pytest.raises(DataError, match="no validation-.*parquet file"):
        load_split("sst2", split="heldout", data_dir=tmp_path)
    (tmp_path / "sst2" / "validation-00000-of-00001.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="unreadable parquet"):
        load_split("sst2", split="heldout", data_dir=tmp_path)


def test_hub_path_through_datasets_on_a_local_stand_in(tmp_path, monkeypatch):
    """`datasets.load_dataset(repo, task)` on a folder laid out (and configured) like nyu-mll/glue."""
    repo = write_glue(tmp_path / "glue_repo", "rte")
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: rte\n  data_files:\n"
        "  - split: train\n    path: rte/train-*\n  - split: validation\n    path: rte/validation-*\n---\n"
    )
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    via_datasets = load_split("rte", split="heldout", hub_dataset=str(repo))
    local = load_split("rte", split="heldout", data_dir=repo)
    assert via_datasets.fingerprint == local.fingerprint and len(via_datasets) == 120


def test_offline_hub_names_the_data_dir_alternative(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as exc:
        load_split("cola", split="heldout")
    message = str(exc.value)
    assert message.startswith("nyu-mll/glue (cola, validation): cannot load from the Hub")
    assert "--data DIR" in message and "\n" not in message
