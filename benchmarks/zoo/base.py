"""The zoo's base: a pico T5 pretrained briefly with span corruption on the two-domain corpus."""

from __future__ import annotations

from benchmarks.zoo.models import new_model, pico_config, pretrain
from benchmarks.zoo.world import BASE_REPO, World
from search.finetune import model_card, save_checkpoint


def make_base(world: World, tokenizer, vocab: list[tuple[str, float]]):
    """Pretrain the base on the corpus, save it as `pico/t5-pico` and record it; returns the model."""
    config = pico_config(vocab_size=len(vocab))
    base = new_model(config, seed=world.seed)
    loss = pretrain(base, tokenizer, world.corpus, steps=world.scale.pretrain_steps, seed=world.seed)
    card = model_card(
        title="t5-pico",
        base_model=None,
        datasets=["pico/corpus"],
        tags=["pico-zoo", "pretraining"],
        description="A pico T5 of the original T5 family (ReLU feed-forward, tied embeddings), pretrained "
        "briefly with span corruption on the synthetic two-domain corpus.",
        details={"steps": world.scale.pretrain_steps, "learning rate": 1e-3, "seed": world.seed},
    )
    save_checkpoint(model=base, tokenizer=tokenizer, out=world.repo_dir(BASE_REPO), card=card)
    world.record(
        BASE_REPO,
        role="base",
        task=None,
        data={"dataset": "pico/corpus", "task": "span_corruption", "n": len(world.corpus)},
        seed=world.seed,
        lr=1e-3,
        steps=world.scale.pretrain_steps,
        final_loss=round(loss, 4),
        reason=None,
        expected_status="compatible",
        base_model=None,
    )
    return base
