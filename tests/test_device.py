"""Devices and precision on a machine without a GPU (issue 14): `--device`/`--dtype` resolution, the one-line
refusal of CUDA where there is none, the out-of-memory back-off (an injected failure), and the device
type and dtype stored with rows and in a study's identity."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from search.cli import main
from search.errors import SearchError
from search.scoring import backoff
from search.scoring.device import Placement, resolve, resolve_device, resolve_dtype
from search.scoring.models import load_seq2seq
from search.scoring.scorer import CPU_MAX_BATCH, Scorer
from search.scoring.settings import ScorerSettings
from search.study import SearchConfig
from search.study.config import default_study_name
from search.study.live import check_placement
from search.tasks.data import load_split

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")


@pytest.fixture(autouse=True)
def _clean(monkeypatch, tmp_path):
    monkeypatch.delenv("TASKVEC_DEVICE", raising=False)
    monkeypatch.delenv("TASKVEC_DEBUG", raising=False)
    monkeypatch.setenv("TASKVEC_HOME", str(tmp_path / "home"))
    backoff.forget()
    yield
    backoff.forget()  # a back-off learned here must not shrink the batches of later tests


@pytest.fixture(scope="module")
def sst2(tiny_zoo: Path):
    """The tiny zoo's sst2 target and 64 examples of its search split."""
    model, tokenizer = load_seq2seq(tiny_zoo / "hub" / "pico" / "t5-pico-sst2")
    split = load_split("sst2", split="search", data_dir=tiny_zoo / "glue", size=64)
    return model, tokenizer, split


# --- choosing the device and the dtype ------------------------------------------------------------------


@no_cuda
def test_auto_is_the_cpu_here_and_the_environment_decides_when_no_flag(monkeypatch):
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(None)
    assert resolve() == Placement(device=torch.device("cpu"), autocast=None)
    assert resolve("cpu", "bf16").autocast == torch.bfloat16 and resolve("cpu", "fp32").autocast is None
    monkeypatch.setenv("TASKVEC_DEVICE", "cuda")
    with pytest.raises(SearchError, match="CUDA is not available"):
        resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")  # a flag beats the environment


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1", "CUDA:0"])
def test_cuda_without_cuda_is_one_line_naming_the_device(spec):
    with pytest.raises(SearchError) as info:
        resolve_device(spec)
    message = str(info.value)
    assert message.startswith(f"--device {spec.lower()}: CUDA is not available") and "\n" not in message


def test_unknown_devices_and_dtypes_and_fp16_on_cpu_are_refused():
    for bad in ("gpu", "tpu:0", "cuda:x"):
        with pytest.raises(SearchError, match="--device"):
            resolve_device(bad)
    with pytest.raises(SearchError, match="--dtype 'int8'"):
        resolve_dtype("int8", device=torch.device("cpu"))
    with pytest.raises(SearchError, match="fp16 on cpu"):
        resolve_dtype("fp16", device=torch.device("cpu"))


@no_cuda
@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "nowhere", "--task", "rte"],
        ["screen", "--task", "rte", "--target", "nowhere"],
        ["search", "--task", "rte", "--target", "nowhere"],
        ["finetune", "--base", "nowhere", "--task", "rte", "--data", "nowhere", "--out", "nowhere"],
    ],
    ids=lambda argv: argv[0],
)
def test_cli_device_cuda_without_cuda_is_one_line_and_exit_1(argv, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["taskvec", *argv, "--device", "cuda"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "--device cuda: CUDA is not available" in err


@no_cuda
def test_refresh_on_cuda_without_cuda_fails_before_any_row_is_read(tmp_path):
    from search.leaderboard import refresh_heldout

    with pytest.raises(SearchError, match="--device cuda: CUDA is not available"):
        refresh_heldout(db_url=f"sqlite:///{tmp_path / 'none.db'}", device="cuda")
    assert not (tmp_path / "none.db").exists()


# --- out-of-memory back-off ---------------------------------------------------------------------------


def _oom_above(limit: int, calls: list[int]):
    def hook(examples: int, tokens: int) -> None:
        calls.append(examples)
        if examples > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {examples} examples)")

    return hook


def test_out_of_memory_halves_batches_retries_and_says_so_once(sst2, monkeypatch, capsys):
    model, tokenizer, split = sst2
    plain = Scorer(model, tokenizer, split).score()
    calls: list[int] = []
    monkeypatch.setattr(backoff, "before_batch", _oom_above(8, calls))
    scorer = Scorer(model, tokenizer, split)
    assert scorer.max_batch > 8
    result = scorer.score()
    np.testing.assert_array_equal(result.predictions, plain.predictions)
    np.testing.assert_allclose(result.margins, plain.margins, atol=1e-4)
    assert result.score == plain.score
    assert max(calls) > 8 and scorer.max_batch <= 8  # it did fail, then fit
    again = Scorer(model, tokenizer, split)  # a later scorer on the device starts where it fit
    assert again.max_batch <= 8
    np.testing.assert_array_equal(again.score().predictions, plain.predictions)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory on cpu" in err[0] and "halved" in err[0], err


def test_out_of_memory_on_one_example_is_one_line(sst2, monkeypatch):
    model, tokenizer, split = sst2
    monkeypatch.setattr(backoff, "before_batch", _oom_above(0, []))
    with pytest.raises(SearchError, match=r"sst2/search: one example \(\d+ input tokens\) does not fit"):
        Scorer(model, tokenizer, split).score()


def test_errors_other_than_out_of_memory_are_not_retried(sst2, monkeypatch):
    model, tokenizer, split = sst2

    def hook(examples: int, tokens: int) -> None:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(backoff, "before_batch", hook)
    scorer = Scorer(model, tokenizer, split)
    with pytest.raises(RuntimeError, match="a real bug"):
        scorer.score()
    assert scorer.max_batch == CPU_MAX_BATCH


# --- what rows and studies store ----------------------------------------------------------------------


def test_bf16_on_cpu_scores_and_is_marked_bf16(sst2):
    model, tokenizer, split = sst2
    fp32 = Scorer(model, tokenizer, split).score()
    bf16 = Scorer(model, tokenizer, split, autocast_dtype=resolve("cpu", "bf16").autocast).score()
    assert (bf16.predictions == fp32.predictions).mean() >= 0.9
    assert bf16.settings["autocast"] == "bfloat16" and bf16.settings["device"] == "cpu"
    stored = ScorerSettings(**bf16.settings, split_seed=0, data="hub", search_size=len(split)).to_dict()
    back = ScorerSettings.from_dict(stored)
    assert (
        back.dtype_name == "bf16" and back.device == "cpu" and next(model.parameters()).dtype == torch.float32
    )


def test_device_type_is_stored_and_rows_from_before_read_as_cpu():
    old = dict(mode="rank", order_seed=0, max_input_length=512, autocast=None, label_words=["a", "b"])
    old.update(split_seed=0, data="hub", search_size=200)
    assert ScorerSettings.from_dict(old).device == "cpu"
    assert ScorerSettings.from_dict(old).to_dict() == old  # a cpu row's stored form is what it always was
    cuda = ScorerSettings(**{**old, "autocast": "bfloat16"}, device="cuda").to_dict()
    assert cuda["device"] == "cuda" and ScorerSettings.from_dict(cuda).device == "cuda"


def test_screening_rows_record_bf16(screened_sst2, tmp_path):
    from search.screen import screen

    home = screened_sst2(tmp_path)
    rows = screen(
        task="sst2",
        target="pico/t5-pico-sst2",
        db_url=home.url,
        data_dir=home.data,
        lambdas=(0.5,),
        search_size=64,  # another split than the fixture's: these candidates are screened anew
        limit=1,
        vector_cache=home.cache,
        progress=False,
        device="cpu",
        dtype="bf16",
    )
    settings = ScorerSettings.from_dict(rows[0]["scorer"])
    assert settings.autocast == "bfloat16" and settings.device == "cpu" and settings.search_size == 64


def test_device_type_and_dtype_are_part_of_the_study_name_only_when_not_cpu_fp32():
    name = default_study_name(SearchConfig(task="rte", target="t"), target_revision="a" * 40)
    same = [SearchConfig(task="rte", target="t", device="cpu", dtype="fp32")]
    if not torch.cuda.is_available():
        same.append(SearchConfig(task="rte", target="t", dtype="auto"))
    for config in same:
        assert default_study_name(config, target_revision="a" * 40) == name
    bf16 = SearchConfig(task="rte", target="t", device="cpu", dtype="bf16")
    assert default_study_name(bf16, target_revision="a" * 40) != name


def test_a_study_scored_elsewhere_is_not_joined_silently():
    scorer = dict(mode="rank", order_seed=0, max_input_length=512, label_words=["a", "b"])
    scorer.update(split_seed=0, data="hub", search_size=200)
    study = SimpleNamespace(study="s", scorer=ScorerSettings(**scorer, autocast="bfloat16", device="cuda"))
    with pytest.raises(SearchError, match="scored on cuda in bf16, this run on cpu in fp32"):
        check_placement(study, resolve("cpu", "fp32"))
    check_placement(study, Placement(device=torch.device("cuda", 1), autocast=torch.bfloat16))
    old = SimpleNamespace(study="s", scorer=ScorerSettings(**scorer, autocast=None))
    check_placement(old, resolve("cpu", "fp32"))


def test_finetune_in_bf16_on_cpu_keeps_fp32_weights(sst2):
    from search.finetune import train_seq2seq, training_placement

    model, tokenizer, _ = sst2
    copy = type(model)(model.config)
    copy.load_state_dict(model.state_dict())
    result = train_seq2seq(
        copy,
        tokenizer,
        [("sst2 sentence: good", "positive")] * 4,
        steps=2,
        lr=1e-3,
        batch_size=2,
        autocast_dtype=torch.bfloat16,
    )
    assert result.steps == 2 and all(p.dtype == torch.float32 for p in copy.parameters())
    with pytest.raises(SearchError, match="fp16"):
        training_placement("cpu", "fp16")


# --- benchmarks/gpu_check.py ----------------------------------------------------------------------------


@no_cuda
def test_gpu_check_without_cuda_is_one_line(capsys):
    from benchmarks.gpu_check import gpu_device

    with pytest.raises(SystemExit) as info:
        gpu_device(smoke=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1 and len(err) == 1 and "CUDA is not available" in err[0]


@pytest.mark.slow
def test_gpu_check_cpu_only_smoke_runs_every_step(tiny_zoo, capsys):
    from benchmarks.gpu_check import main as gpu_check

    summary = gpu_check(["--zoo", str(tiny_zoo), "--tasks", "sst2", "--cpu-only-smoke"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(summary))
    # Every step ran; the bf16 bars are the GPU's (on 64 examples one flip is 1.6%, and CPU bf16 autocast
    # is not the GPU's), so the smoke run holds only fp32 to identical predictions.
    assert summary["smoke"] and summary["search"]["ok"] and summary["search"]["n_finished"] >= 4
    row = summary["agreement"][0]
    assert row["fp32_agreement"] == 1.0 and row["n"] > 0 and row["bf16_agreement"] > 0.9
    assert [r["shape"] for r in summary["throughput"]] == ["pico", "t5-small", "t5-base"]
    assert all(r["cpu_ex_per_s"] > 0 and r["gpu_bf16_ex_per_s"] > 0 for r in summary["throughput"])
