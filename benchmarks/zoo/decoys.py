"""The zoo's decoys: SST-2 repos the registry must refuse, one step per kind of failure.

Each step makes one repo (or two) and records it with the reason the registry should give and the
status it should end in, each from its own seeds. The decoys that do not descend from the base (other
sizes and lineages, pretrained from scratch) train in a worker while the base trains
(`run_scratch_decoys`); the others in the build's main process once the base is there (`make_base_decoys`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from benchmarks.zoo.data import tokenizer_texts
from benchmarks.zoo.models import (
    finetune_copy,
    new_model,
    pico_config,
    poisoned_state,
    pretrain,
    save_not_t5,
    truncate_safetensors,
)
from benchmarks.zoo.tokenizer import fit_vocab, make_tokenizer
from benchmarks.zoo.world import BASE_REPO, SCALES, World
from search.finetune import model_card, save_checkpoint, state_dict_for_saving, task_pairs
from search.tasks import get_task

DECOY_LR = 5e-4


@dataclass(frozen=True)
class _Kit:
    """What every decoy step shares: the world, the base, the tokenizer and the SST-2 training pairs."""

    world: World
    base: Any  # None for the decoys pretrained from scratch
    tokenizer: Any
    vocab: list[tuple[str, float]]
    pairs: list[tuple[str, str]]
    short: int  # pretraining steps of the decoys pretrained from scratch

    @property
    def seed(self) -> int:
        return self.world.seed

    def tuned(self, from_model: Any, k: int) -> Any:
        """A copy of `from_model` fine-tuned on SST-2 with the `k`-th decoy seed."""
        steps, seed = self.world.scale.decoy_steps, self.seed * 1000 + 900 + k
        return finetune_copy(from_model, self.tokenizer, self.pairs, steps=steps, lr=DECOY_LR, seed=seed)[0]

    def save(
        self, repo: str, model: Any, *, base_model: str | None, text: str, tokenizer: Any = None, **kw: Any
    ) -> None:
        """Save `model` as `repo` with an SST-2 model card claiming `base_model`."""
        out, card = self.world.repo_dir(repo), self.card(repo, base_model=base_model, text=text)
        save_checkpoint(model=model, tokenizer=tokenizer or self.tokenizer, out=out, card=card, **kw)

    @staticmethod
    def card(repo: str, *, base_model: str | None, text: str) -> str:
        """An SST-2 decoy's model card."""
        return model_card(
            title=repo,
            base_model=base_model,
            datasets=["pico/glue"],
            tags=["pico-zoo", "task:sst2"],
            description=text,
        )

    def record(
        self, repo: str, reason: str, status: str, detail: str, base_model: str | None, **extra: Any
    ) -> None:
        """Record `repo` as a decoy the registry should refuse with `reason`, ending in `status`."""
        self.world.record(
            repo,
            role="decoy",
            task="sst2",
            data={"dataset": "pico/glue", "path": "glue/sst2", "task": "sst2", "n": len(self.pairs)},
            seed=self.seed,
            lr=DECOY_LR,
            steps=self.world.scale.decoy_steps,
            reason=reason,
            expected_status=status,
            detail=detail,
            base_model=base_model,
            **extra,
        )


def _kit(world: World, base: Any, tokenizer: Any, vocab: list[tuple[str, float]], pairs: list) -> _Kit:
    short = max(world.scale.pretrain_steps // 5, 50)
    return _Kit(world=world, base=base, tokenizer=tokenizer, vocab=vocab, pairs=pairs, short=short)


def decoy_pairs(world: World) -> list[tuple[str, str]]:
    """The SST-2 training pairs every decoy is fine-tuned on."""
    return task_pairs(get_task("sst2"), world.frames["glue/sst2"]["train"].iloc[:256])


def run_scratch_decoys(
    *, out: str, seed: int, scale_name: str, corpus: list[str], vocab: list[tuple[str, float]], pairs: list
) -> dict[str, dict[str, Any]]:
    """Make the decoys that do not descend from the base (a picklable unit for a worker process).

    They need only the corpus, the vocabulary and the SST-2 pairs, so they train while the base does;
    single-threaded and from their own seeds, their files do not depend on which process runs them.

    Returns:
        Their manifest entries (repo -> entry).
    """
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    world = World(out=Path(out), seed=seed, scale=SCALES[scale_name], corpus=corpus)
    kit = _kit(world, None, make_tokenizer(vocab), vocab, pairs)
    _other_size(kit)
    _gated_gelu(kit)
    _false_card(kit, _other_lineage(kit))
    return world.manifest


def make_base_decoys(world: World, base: Any, tokenizer: Any, vocab: list[tuple[str, float]]) -> None:
    """Make and record the decoys fine-tuned from the base."""
    kit = _kit(world, base, tokenizer, vocab, decoy_pairs(world))
    _truncated(kit)
    _nan_weights(kit)
    _pickle_only(kit)
    _not_t5(kit)
    _other_vocabulary(kit)
    _extra_head(kit)


def _other_size(kit: _Kit) -> None:
    """Another size: shapes differ from the base."""
    repo = "pico/t5-pico-mini-sst2"
    cfg = pico_config(vocab_size=len(kit.vocab), d_model=32, d_ff=128, num_heads=2)
    mini = new_model(cfg, seed=kit.seed + 101)
    pretrain(mini, kit.tokenizer, kit.world.corpus[: 32 * kit.short], steps=kit.short, seed=kit.seed + 101)
    kit.save(repo, kit.tuned(mini, 1), base_model="pico/t5-pico-mini", text="A smaller pico T5 (d_model 32).")
    kit.record(
        repo,
        "config_mismatch",
        "incompatible",
        "d_model 32, d_ff 128, 2 heads (base: 64, 256, 4)",
        "pico/t5-pico-mini",
    )


def _gated_gelu(kit: _Kit) -> None:
    """Gated-GELU variant (the T5 v1.1 family): same sizes, another feed-forward."""
    repo = "pico/t5-pico-gated-sst2"
    cfg = pico_config(vocab_size=len(kit.vocab), feed_forward_proj="gated-gelu")
    gated = new_model(cfg, seed=kit.seed + 102)
    pretrain(gated, kit.tokenizer, kit.world.corpus[: 32 * kit.short], steps=kit.short, seed=kit.seed + 102)
    text = "A gated-GELU pico T5 (T5 v1.1 family)."
    kit.save(repo, kit.tuned(gated, 2), base_model="pico/t5-pico-v1_1", text=text)
    kit.record(
        repo,
        "config_mismatch",
        "incompatible",
        "feed_forward_proj gated-gelu (base: relu)",
        "pico/t5-pico-v1_1",
    )


def _other_lineage(kit: _Kit) -> Any:
    """Other lineage: identical shapes, pretrained independently from another seed; returns that model."""
    repo = "pico/t5-pico-seed1"
    other = new_model(pico_config(vocab_size=len(kit.vocab)), seed=kit.seed + 1)
    pretrain(other, kit.tokenizer, kit.world.corpus, steps=kit.short, seed=kit.seed + 1)
    kit.save(repo, other, base_model=None, text="A pico T5 pretrained from another seed (not the base).")
    kit.record(
        repo, "lineage_mismatch", "incompatible", "same shapes, independently pretrained (seed + 1)", None
    )
    return other


def _false_card(kit: _Kit, other: Any) -> None:
    """A false card: fine-tuned from the other lineage while claiming the base."""
    repo = "pico/t5-pico-sst2-claims-base"
    kit.save(
        repo, kit.tuned(other, 3), base_model=BASE_REPO, text=f"Claims to be fine-tuned from {BASE_REPO}."
    )
    kit.record(
        repo,
        "lineage_mismatch",
        "incompatible",
        "card claims pico/t5-pico; weights descend from pico/t5-pico-seed1",
        BASE_REPO,
    )


def _truncated(kit: _Kit) -> None:
    """Integrity: a weight file cut short."""
    repo = "pico/t5-pico-truncated-sst2"
    kit.save(repo, kit.tuned(kit.base, 4), base_model=BASE_REPO, text="A download cut short.")
    truncate_safetensors(kit.world.repo_dir(repo))
    kit.record(
        repo,
        "integrity",
        "broken",
        "model.safetensors cut at 60% of its data (header intact)",
        BASE_REPO,
        truncated=True,
    )


def _nan_weights(kit: _Kit) -> None:
    """Integrity: NaN/inf weights."""
    repo = "pico/t5-pico-nan-sst2"
    model = kit.tuned(kit.base, 5)
    kit.save(repo, model, base_model=BASE_REPO, text="Diverged training.", state=poisoned_state(model))
    kit.record(
        repo,
        "integrity",
        "broken",
        "NaN in shared.weight, NaN/inf in encoder.block.0.layer.1.DenseReluDense.wi.weight",
        BASE_REPO,
    )


def _pickle_only(kit: _Kit) -> None:
    """Pickle only: weights a registry must not unpickle blindly (and cannot verify without loading)."""
    repo = "pico/t5-pico-pickle-sst2"
    text = "Weights only as pytorch_model.bin."
    kit.save(repo, kit.tuned(kit.base, 6), base_model=BASE_REPO, text=text, weights_format="pickle")
    kit.record(
        repo, "pickle_only", "unverified", "only pytorch_model.bin (a real fine-tune of the base)", BASE_REPO
    )


def _not_t5(kit: _Kit) -> None:
    """Not T5 at all."""
    repo = "pico/bart-pico"
    save_not_t5(
        out=kit.world.repo_dir(repo),
        tokenizer=kit.tokenizer,
        vocab_size=len(kit.vocab),
        seed=kit.seed + 103,
        card=kit.card(repo, base_model=None, text="A pico BART (model_type bart)."),
    )
    kit.record(repo, "not_t5", "incompatible", "model_type bart", None)


def _other_vocabulary(kit: _Kit) -> None:
    """Another vocabulary: same pieces in another id order, so ids mean other words."""
    repo = "pico/t5-pico-othertok-sst2"
    other_tok = make_tokenizer(fit_vocab(tokenizer_texts(kit.world), permute_seed=kit.seed + 104))
    model = kit.tuned(kit.base, 7)
    kit.save(
        repo, model, base_model=BASE_REPO, text="Saved with a different vocabulary.", tokenizer=other_tok
    )
    kit.record(
        repo,
        "tokenizer_mismatch",
        "incompatible",
        "same config and size, vocabulary in another id order",
        BASE_REPO,
    )


def _extra_head(kit: _Kit) -> None:
    """An extra tensor: a classification head the base does not have."""
    repo = "pico/t5-pico-head-sst2"
    model = kit.tuned(kit.base, 8)
    state = state_dict_for_saving(model)
    gen = torch.Generator().manual_seed(kit.seed + 105)
    state["classifier.weight"] = torch.randn(2, model.config.d_model, generator=gen)
    state["classifier.bias"] = torch.zeros(2)
    text = "Fine-tuned with an extra classification head."
    kit.save(repo, model, base_model=BASE_REPO, text=text, state=state)
    kit.record(
        repo, "tensor_mismatch", "incompatible", "extra tensors classifier.weight, classifier.bias", BASE_REPO
    )
