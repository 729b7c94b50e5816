"""Pico T5 models: the config, span-corruption pretraining, and the decoys the registry must reject."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

from registry.constants import SAFETENSORS_SINGLE
from search.finetune import model_card, save_checkpoint, state_dict_for_saving, train_seq2seq

PICO = {"d_model": 64, "d_kv": 16, "d_ff": 256, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4}
"""Pico dimensions; the family is the original T5 (ReLU feed-forward, tied embeddings)."""


def pico_config(*, vocab_size: int, feed_forward_proj: str = "relu", **overrides):
    """A `T5Config` of the pico family for a tokenizer of `vocab_size` ids."""
    dims = {**PICO, **overrides}
    return T5Config(
        vocab_size=vocab_size,
        feed_forward_proj=feed_forward_proj,
        tie_word_embeddings=True,
        dropout_rate=0.0,  # at this size dropout 0.1 stalls fine-tuning (measured: loss 0.42 vs 0.11)
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        architectures=["T5ForConditionalGeneration"],
        **dims,
    )


def new_model(config, *, seed: int):
    """A randomly initialised `T5ForConditionalGeneration` (seeded)."""
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    model.eval()
    return model


def span_corruption_pairs(
    token_ids: Sequence[Sequence[int]],
    *,
    sentinel_ids: Sequence[int],
    rng: np.random.Generator,
    noise: float = 0.15,
    max_span: int = 2,
) -> list[tuple[list[int], list[int]]]:
    """T5 span corruption: each position starts a 1..max_span masked span with probability `noise`.

    Returns:
        `(input ids, target ids)` per sentence, without `</s>` (the caller appends it).
    """
    pairs = []
    for ids in token_ids:
        inp: list[int] = []
        tgt: list[int] = []
        k = 0
        i = 0
        while i < len(ids):
            if k < len(sentinel_ids) and rng.random() < noise:
                span = int(rng.integers(1, max_span + 1))
                inp.append(sentinel_ids[k])
                tgt.append(sentinel_ids[k])
                tgt.extend(ids[i : i + span])
                k += 1
                i += span
            else:
                inp.append(ids[i])
                i += 1
        if k == 0 and ids:
            # Every example must teach something: mask one token.
            j = int(rng.integers(len(ids)))
            inp = [*ids[:j], sentinel_ids[0], *ids[j + 1 :]]
            tgt = [sentinel_ids[0], ids[j]]
        pairs.append((inp, tgt))
    return pairs


def pretrain(
    model,
    tokenizer,
    sentences: Sequence[str],
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """Span-corruption pretraining in place; returns the mean loss of the last 10 steps."""
    rng = np.random.default_rng(seed)
    ids = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    sentinels = [tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(10)]
    eos = tokenizer.eos_token_id
    pairs = span_corruption_pairs(ids, sentinel_ids=sentinels, rng=rng)
    return _train_ids(model, pairs, eos=eos, steps=steps, lr=lr, batch_size=batch_size, seed=seed)


def _train_ids(model, pairs, *, eos: int, steps: int, lr: float, batch_size: int, seed: int) -> float:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        batch = [pairs[int(i)] for i in rng.integers(len(pairs), size=batch_size)]
        src = _pad([[*a, eos] for a, _ in batch], 0)
        tgt = _pad([[*b, eos] for _, b in batch], -100)
        loss = model(input_ids=src, attention_mask=(src != 0).long(), labels=tgt).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return float(np.mean(losses[-10:]))


def _pad(seqs, value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def finetune_copy(base, tokenizer, pairs, *, steps: int, lr: float, seed: int, batch_size: int = 32):
    """A fine-tuned copy of `base` (the base itself is left untouched)."""
    model = copy.deepcopy(base)
    result = train_seq2seq(model, tokenizer, pairs, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    return model, result


# --- decoys -------------------------------------------------------------------------------------------------


def truncate_safetensors(folder: Path, *, keep_fraction: float = 0.6) -> None:
    """Cut `model.safetensors` inside its data section, leaving the header intact (a broken download)."""
    path = folder / SAFETENSORS_SINGLE
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    data_start = 8 + header_len
    cut = data_start + int((len(data) - data_start) * keep_fraction)
    path.write_bytes(data[:cut])


def poisoned_state(model) -> dict[str, torch.Tensor]:
    """The model's tensors with NaN and inf written into the embedding and an encoder FF weight."""
    state = state_dict_for_saving(model)
    state["shared.weight"][3, :8] = float("nan")
    key = "encoder.block.0.layer.1.DenseReluDense.wi.weight"
    state[key][0, :4] = float("inf")
    state[key][1, :4] = float("nan")
    return state


def save_not_t5(*, out: Path, tokenizer, vocab_size: int, seed: int, card: str) -> Path:
    """A tiny BART (model_type `bart`) with the zoo's tokenizer: a seq2seq model that is not T5."""
    config = BartConfig(
        vocab_size=vocab_size,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        decoder_start_token_id=1,
    )
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config)
    # BART ties its embeddings too; keep one copy of each distinct tensor storage.
    state, seen = {}, set()
    for name, tensor in sorted(model.state_dict().items()):
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        state[name] = tensor.detach().contiguous().clone()
    return save_checkpoint(model=model, tokenizer=tokenizer, out=out, card=card, state=state)


__all__ = [
    "PICO",
    "finetune_copy",
    "model_card",
    "new_model",
    "pico_config",
    "poisoned_state",
    "pretrain",
    "save_not_t5",
    "span_corruption_pairs",
    "truncate_safetensors",
]
