"""Tiny real T5 repos written with `save_pretrained` for registry, merge and task-vector tests (no zoo)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import T5Config, T5ForConditionalGeneration

WORDS = [f"w{i}" for i in range(40)]


def write_tokenizer(out: Path, *, permute: bool = False) -> None:
    """A word-level tokenizer.json (ids permuted: same words, other ids)."""
    tokens = ["<pad>", "</s>", "<unk>", *WORDS]
    if permute:
        tokens = tokens[:3] + list(reversed(tokens[3:]))
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))


def new_t5(*, seed: int, d_model: int = 32, feed_forward_proj: str = "relu"):
    """A randomly initialised pico T5 (vocab 43 + 5 spare ids, 1+1 layers)."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=48,
        d_model=d_model,
        d_kv=8,
        d_ff=4 * d_model,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        feed_forward_proj=feed_forward_proj,
        tie_word_embeddings=True,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).eval()


def perturbed(model, *, seed: int, scale: float):
    """A copy of `model` with every weight moved by `scale` x its own std of Gaussian noise (a stand-in fine-tune)."""
    clone = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std() * scale)
    return clone


def save_repo(model, out: Path, *, card_base: str | None = None, permute_vocab: bool = False) -> Path:
    """Save `model` (safetensors), a tokenizer and a card with YAML front matter into `out`."""
    model.save_pretrained(out)
    write_tokenizer(out, permute=permute_vocab)
    front = ["---", "license: apache-2.0", "tags: [pico]"]
    if card_base:
        front.append(f"base_model: {card_base}")
    (out / "README.md").write_text("\n".join([*front, "---", "", "# a tiny T5", ""]))
    return out


def make_world(root: Path) -> dict[str, str]:
    """A small Hub-like folder: a base, two fine-tunes and one decoy per reason; returns repo -> expected code."""
    base = new_t5(seed=0)
    save_repo(base, root / "t/base")
    expected: dict[str, str] = {}
    save_repo(perturbed(base, seed=1, scale=0.05), root / "t/ft-a", card_base="t/base")
    expected["t/ft-a"] = "compatible"
    save_repo(perturbed(base, seed=2, scale=0.1), root / "t/ft-b", card_base="t/base")
    expected["t/ft-b"] = "compatible"
    save_repo(new_t5(seed=3, d_model=48), root / "t/wide")
    expected["t/wide"] = "config_mismatch"
    save_repo(new_t5(seed=4, feed_forward_proj="gated-gelu"), root / "t/gated")
    expected["t/gated"] = "config_mismatch"
    save_repo(
        perturbed(base, seed=5, scale=0.05), root / "t/othertok", card_base="t/base", permute_vocab=True
    )
    expected["t/othertok"] = "tokenizer_mismatch"
    save_repo(new_t5(seed=6), root / "t/stranger", card_base="t/base")  # false claim
    expected["t/stranger"] = "lineage_mismatch"

    save_repo(perturbed(base, seed=7, scale=0.05), root / "t/head", card_base="t/base")
    state = _load(root / "t/head/model.safetensors")
    state["classifier.weight"] = torch.zeros(2, 32)
    save_file(state, str(root / "t/head/model.safetensors"), metadata={"format": "pt"})
    expected["t/head"] = "tensor_mismatch"

    save_repo(perturbed(base, seed=8, scale=0.05), root / "t/nan", card_base="t/base")
    state = _load(root / "t/nan/model.safetensors")
    state["encoder.block.0.layer.1.DenseReluDense.wi.weight"][0, 0] = float("nan")  # not a lineage probe
    save_file(state, str(root / "t/nan/model.safetensors"), metadata={"format": "pt"})
    expected["t/nan"] = "integrity"

    save_repo(perturbed(base, seed=9, scale=0.05), root / "t/cut", card_base="t/base")
    path = root / "t/cut/model.safetensors"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    expected["t/cut"] = "integrity"

    pickle_dir = root / "t/pickle"
    save_repo(perturbed(base, seed=10, scale=0.05), pickle_dir, card_base="t/base")
    torch.save(_load(pickle_dir / "model.safetensors"), pickle_dir / "pytorch_model.bin")
    (pickle_dir / "model.safetensors").unlink()
    expected["t/pickle"] = "pickle_only"

    bad = root / "t/badjson"
    save_repo(perturbed(base, seed=11, scale=0.05), bad)
    (bad / "config.json").write_text('{"model_type": "t5", "d_model": ')
    expected["t/badjson"] = "malformed"

    bart = root / "t/bart"
    bart.mkdir(parents=True)
    (bart / "config.json").write_text(json.dumps({"model_type": "bart", "d_model": 32}))
    (bart / "model.safetensors").write_bytes(b"\0" * 64)
    expected["t/bart"] = "not_t5"
    return expected


def _load(path: Path) -> dict[str, torch.Tensor]:
    return dict(load_file(str(path)))


def _save_untied(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Rewrite a saved repo as T5 v1.1 / FLAN does: its own lm_head tensor, `tie_word_embeddings: false`."""
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(config))


def make_base(root: Path, family: str) -> Path:
    """A base checkpoint: ReLU + tied embeddings (original T5) or gated-gelu + untied lm_head (v1.1)."""
    folder = root / f"base-{family}"
    if family == "original":
        save_repo(new_t5(seed=0), folder)
    else:
        save_repo(new_t5(seed=0, feed_forward_proj="gated-gelu"), folder)
        state = load_file(str(folder / "model.safetensors"))
        gen = torch.Generator().manual_seed(99)
        state["lm_head.weight"] = torch.randn(state["shared.weight"].shape, generator=gen)
        _save_untied(folder, state)
    return folder


def make_finetune(base: Path, out: Path, *, seed: int, scale: float = 0.05) -> Path:
    """A stand-in fine-tune: the base with every float tensor moved by Gaussian noise."""
    shutil.copytree(base, out)
    state = load_file(str(base / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    for name, t in state.items():
        state[name] = t + torch.randn(t.shape, generator=gen) * scale * (t.std() + 1e-3)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
