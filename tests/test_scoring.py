"""The scorer on real (tiny) T5 models: exact rank classification, prefixes, live weights, the CLI."""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer
from typer.testing import CliRunner

from registry.errors import ModelError
from search.cli import app
from search.errors import DataError, SearchError
from search.scoring import Scorer, ScorerSettings, load_seq2seq
from search.scoring.encoding import encode_split, label_token_ids, length_batches
from search.tasks import Split, get_task, load_split
from search.tasks.data import fingerprint_examples

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "mat",
    "big",
    "small",
    "red",
    "blue",
    "very",
    "not",
    "movie",
    "was",
    "good",
    "bad",
]
PROMPT_WORDS = ["mrpc", "rte", "cola", "sst2", "sentence:", "sentence1:", "sentence2:"]


def make_tokenizer(*, chars: str = string.ascii_lowercase + "_", label_words: bool = False):
    """A real T5 (Unigram) tokenizer. Without `label_words`, label words spell out in characters, so
    labels have several tokens of different lengths (as with the real T5 vocabulary)."""
    words = WORDS + PROMPT_WORDS
    if label_words:
        words += ["not_equivalent", "equivalent", "entailment", "not_entailment"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"▁{w}", -1.0 - 0.01 * i) for i, w in enumerate(words)]
    vocab += [("▁", -20.0)] + [(c, -21.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def make_model(tokenizer, *, seed: int = 0):
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


def make_split(task: str = "mrpc", n: int = 40, *, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    spec = get_task(task)
    frame = pd.DataFrame(
        {
            col: [" ".join(rng.choice(WORDS, rng.integers(2, 12))) for _ in range(n)]
            for col in spec.text_fields
        }
    )
    frame["label"] = rng.integers(0, 2, n)
    frame["idx"] = np.arange(n)
    frame = frame[list(spec.columns)]
    return Split(
        task=task, name="heldout", examples=frame, fingerprint=fingerprint_examples(frame, spec=spec)
    )


def naive_label_logprobs(model, tokenizer, text: str, words: list[str]) -> list[float]:
    """Reference: one example, one label at a time, the model's own teacher-forced loss."""
    inputs = tokenizer(text, return_tensors="pt")
    out = []
    for word in words:
        labels = tokenizer(word, return_tensors="pt").input_ids
        with torch.no_grad():
            loss = model(**inputs, labels=labels).loss
        out.append(-loss.item() * labels.shape[1])
    return out


def test_rank_equals_per_example_teacher_forcing_with_multi_token_labels():
    tok = make_tokenizer()
    model = make_model(tok)
    spec = get_task("mrpc")
    lengths = [len(ids) for ids in label_token_ids(spec, tok)]
    assert (
        lengths[0] != lengths[1]
        and min(lengths) > 3
        and all(ids[-1] == tok.eos_token_id for ids in label_token_ids(spec, tok))
    )
    split = make_split("mrpc", 30)
    # A small token budget forces several batches with padding inside them.
    result = Scorer(model, tok, split, batch_tokens=64).score()
    assert result.n == 30 and sorted(result.positions.tolist()) == list(range(30))
    words = [spec.label_words[k] for k in spec.label_ids]
    for i in range(8):
        row = split.examples.iloc[result.positions[i]]
        ref = naive_label_logprobs(model, tok, spec.format_input(row), words)
        gold = int(row["label"])
        assert result.margins[i] == pytest.approx(ref[gold] - ref[1 - gold], abs=1e-4)
        assert result.predictions[i] == int(np.argmax(ref))
        assert result.labels[i] == gold
    assert result.metrics == spec.compute_metrics(result.labels, result.predictions)


def test_prefixes_are_nested_and_consistent_with_the_full_score():
    tok = make_tokenizer()
    scorer = Scorer(make_model(tok), tok, make_split("rte", 50), batch_tokens=96)
    full = scorer.score()
    previous = None
    for n in (5, 20, 50):
        part = scorer.score(prefix=n)
        assert part.n == n
        assert np.array_equal(part.positions, full.positions[:n])
        assert np.array_equal(part.predictions, full.predictions[:n])
        np.testing.assert_allclose(part.margins, full.margins[:n], atol=1e-4)  # other batch padding
        if previous is not None:
            assert set(previous.positions) <= set(part.positions)
        previous = part
    assert scorer.score(prefix=50).score == full.score
    for bad in (0, 51):
        with pytest.raises(DataError, match="outside 1..50"):
            scorer.score(prefix=bad)
    # The order is a fixed seeded permutation: another scorer with the same seed agrees.
    again = Scorer(scorer.model, tok, scorer.split, order_seed=0)
    assert np.array_equal(again.order, scorer.order)
    assert not np.array_equal(Scorer(scorer.model, tok, scorer.split, order_seed=1).order, scorer.order)


def test_scores_follow_in_place_weight_changes():
    tok = make_tokenizer()
    model = make_model(tok)
    scorer = Scorer(model, tok, make_split("mrpc", 30))
    before = scorer.score()
    weight = model.decoder.block[0].layer[0].SelfAttention.q.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(5.0)
        model.shared.weight.add_(0.5 * torch.randn_like(model.shared.weight))
    changed = scorer.score()
    assert not np.allclose(changed.margins, before.margins, atol=1e-3)
    with torch.no_grad():
        weight.copy_(saved)
        model.shared.weight.copy_(make_model(tok).shared.weight)
    np.testing.assert_allclose(scorer.score().margins, before.margins, atol=1e-6)


def test_tokenization_is_cached_per_split_and_tokenizer():
    tok = make_tokenizer()
    split = make_split("sst2", 20)
    first = encode_split(split, tok)
    assert encode_split(split, tok) is first
    other_tok = make_tokenizer(label_words=True)
    assert encode_split(split, other_tok) is not first
    assert encode_split(make_split("sst2", 20, seed=1), tok) is not first
    assert (
        first.ids.shape[0] == 20 and (first.ids[np.arange(20), first.lengths - 1] == tok.eos_token_id).all()
    )


def test_length_batches_cover_every_example_under_the_budget():
    lengths = np.random.default_rng(0).integers(1, 60, 500)
    batches = length_batches(lengths, batch_tokens=256, max_batch=32)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        assert len(b) <= 32 and (len(b) == 1 or len(b) * lengths[b].max() <= 256)
    assert np.all(np.diff(lengths[flat]) <= 0)  # longest first: similar lengths share a batch
    assert len(length_batches(np.array([1000, 3]), batch_tokens=256, max_batch=32)[0]) == 1


def test_bf16_autocast_runs_and_stays_close():
    tok = make_tokenizer(label_words=True)
    model = make_model(tok)
    split = make_split("mrpc", 30)
    fp32 = Scorer(model, tok, split).score()
    bf16 = Scorer(model, tok, split, autocast_dtype=torch.bfloat16).score()
    assert bf16.settings["autocast"] == "bfloat16" and fp32.settings["autocast"] is None
    np.testing.assert_allclose(bf16.margins, fp32.margins, atol=0.1)


def test_scorer_rebuilt_from_stored_settings_scores_identically():
    tok = make_tokenizer(label_words=True)
    model = make_model(tok)
    split = make_split("mrpc", 30)
    first = Scorer(
        model, tok, split, mode="rank", order_seed=3, max_input_length=16, autocast_dtype=torch.bfloat16
    )
    stored = ScorerSettings(**first.settings, split_seed=0, data="hub", search_size=len(split)).to_dict()
    settings = ScorerSettings.from_dict(json.loads(json.dumps(stored)))
    again = Scorer.from_settings(model, tok, split, settings)
    assert again.settings == first.settings
    a, b = first.score(prefix=20), again.score(prefix=20)
    assert a.score == b.score and np.array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.margins, b.margins)
    with pytest.raises(SearchError, match="autocast"):
        ScorerSettings.from_dict({**stored, "autocast": "nope"}).scorer_kwargs()
    with pytest.raises(SearchError, match="order_seed"):
        ScorerSettings.from_dict({k: v for k, v in stored.items() if k != "order_seed"})


def test_generate_mode_counts_non_label_outputs_as_wrong():
    tok = make_tokenizer(label_words=True)
    split = make_split("rte", 20)
    model = make_model(tok)
    # Bias the output layer so that greedy decoding emits one fixed non-label word forever.
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.convert_tokens_to_ids("▁cat")] = 1.0
    model.config.tie_word_embeddings = False
    result = Scorer(model, tok, split, mode="generate").score()
    assert (result.predictions == -1).all() and result.score == 0.0 and np.isnan(result.margins).all()


def test_bad_inputs_give_clear_errors():
    tok = make_tokenizer()
    model = make_model(tok)
    split = make_split("mrpc", 10)
    with pytest.raises(DataError, match="unknown scoring mode"):
        Scorer(model, tok, split, mode="beam")
    empty = Split(task="mrpc", name="search", examples=split.examples.iloc[:0], fingerprint="x")
    with pytest.raises(DataError, match="empty split"):
        Scorer(model, tok, empty)
    unlabelled = Split(task="mrpc", name="search", examples=split.examples.assign(label=-1), fingerprint="y")
    with pytest.raises(DataError, match="labels outside"):
        Scorer(model, tok, unlabelled)
    no_q = make_tokenizer(chars="abcdefghijklmnoprstuvwxyz_")
    with pytest.raises(ModelError, match="label word 'not_equivalent' of task mrpc does not tokenize"):
        Scorer(make_model(no_q), no_q, split)


def _save_model_and_data(tmp_path: Path) -> tuple[Path, Path]:
    tok = make_tokenizer(label_words=True)
    model_dir = tmp_path / "model"
    make_model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "data"
    for task in ("mrpc", "rte"):
        (data / task).mkdir(parents=True)
        for split_name, seed in (("train", 1), ("validation", 2)):
            make_split(task, 30, seed=seed).examples.to_parquet(
                data / task / f"{split_name}-00000-of-00001.parquet"
            )
    return model_dir, data


def test_eval_command_json_and_table(tmp_path):
    model_dir, data = _save_model_and_data(tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        app, ["eval", "--model", str(model_dir), "--task", "rte", "--data", str(data), "--json"]
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1
    row = rows[0]
    assert {"task", "split", "mode", "n", "score", "metrics", "fingerprint"} <= set(row)
    assert (row["task"], row["split"], row["mode"], row["n"]) == ("rte", "heldout", "rank", 30)
    expected = load_split("rte", split="heldout", data_dir=data)
    assert row["fingerprint"] == expected.fingerprint
    assert row["score"] == row["metrics"]["score"] == row["metrics"]["accuracy"]

    table = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(model_dir),
            "--task",
            "mrpc",
            "--data",
            str(data),
            "--mode",
            "generate",
            "--split",
            "search",
        ],
    )
    assert table.exit_code == 0, table.output
    assert "mrpc" in table.stdout and "f1" in table.stdout


@pytest.mark.slow
def test_eval_errors_are_one_line(tmp_path):
    model_dir, data = _save_model_and_data(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "search.cli",
            "eval",
            "--model",
            str(model_dir),
            "--task",
            "cola",
            "--data",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no folder for task 'cola'" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mrpc", "rte", "cola", "sst2"])
def test_pico_target_beats_base_and_rank_agrees_with_generate(tiny_zoo, task):
    """On the zoo's held-out split, each target beats the base on its own task, and the two modes agree."""
    split = load_split(task, split="heldout", data_dir=tiny_zoo / "glue")
    target, tok = load_seq2seq(tiny_zoo / "hub" / "pico" / f"t5-pico-{task}")
    base, base_tok = load_seq2seq(tiny_zoo / "hub" / "pico" / "t5-pico")
    rank = Scorer(target, tok, split).score()
    generate = Scorer(target, tok, split, mode="generate").score()
    base_rank = Scorer(base, base_tok, split).score()
    assert rank.score > base_rank.score
    assert abs(rank.score - generate.score) <= 2.0
    valid = generate.predictions >= 0
    assert valid.mean() > 0.95
    assert (rank.predictions[valid] == generate.predictions[valid]).mean() > 0.95


@pytest.mark.slow
def test_eval_command_on_a_pico_target(tiny_zoo):
    target = tiny_zoo / "hub" / "pico" / "t5-pico-sst2"
    res = CliRunner().invoke(
        app, ["eval", "--model", str(target), "--task", "all", "--data", str(tiny_zoo), "--json"]
    )
    assert res.exit_code == 0, res.output
    rows = {r["task"]: r for r in (json.loads(x) for x in res.stdout.splitlines() if x.startswith("{"))}
    assert list(rows) == ["mrpc", "rte", "cola", "sst2"]
    assert all(r["split"] == "heldout" and r["mode"] == "rank" and r["n"] > 0 for r in rows.values())
    # The command reports exactly what the scorer computes in-process on the same split.
    model, tok = load_seq2seq(target)
    split = load_split("sst2", split="heldout", data_dir=tiny_zoo)
    direct = Scorer(model, tok, split).score()
    assert rows["sst2"]["fingerprint"] == split.fingerprint
    assert rows["sst2"]["score"] == pytest.approx(direct.score)
