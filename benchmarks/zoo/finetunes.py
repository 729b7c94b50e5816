"""The zoo's fine-tunes: one `Job` per target or candidate repo, each run from the saved base and data.

`run_finetune_job` is a picklable unit for worker processes: it reads everything from disk and runs
single-threaded, so its files do not depend on which process runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration
from transformers.utils import logging as hf_logging

from benchmarks.zoo.data import Dataset
from benchmarks.zoo.world import BASE_REPO, Scale, World
from search.finetune import model_card, save_checkpoint, subsample, task_pairs, train_seq2seq
from search.tasks import get_task


@dataclass(frozen=True)
class Job:
    """One fine-tuned repo of the zoo."""

    repo: str
    role: str  # target | candidate
    dataset: str
    task: str
    n_train: int | None
    steps: int
    lr: float
    seed: int
    helps: tuple[str, ...] = ()
    note: str = ""


def zoo_jobs(scale: Scale, *, tiny: bool) -> list[Job]:
    """The fine-tunes of a build: the four data-poor targets and the candidates (fewer at tiny scale)."""
    t, c = scale.target_steps, scale.candidate_steps
    lr_c = 2e-3  # related tasks need it to be learnt within the 5-minute budget
    jobs = [
        Job("pico/t5-pico-sst2", "target", "glue", "sst2", 64, t, 1e-3, 11),
        Job("pico/t5-pico-cola", "target", "glue", "cola", 160, t, 1e-3, 12),
        Job("pico/t5-pico-mrpc", "target", "glue", "mrpc", 160, t, 1e-3, 13),
        Job("pico/t5-pico-rte", "target", "glue", "rte", 160, t, 1e-3, 14),
        Job("pico/t5-pico-food-sst2-a", "candidate", "food_reviews_a", "sst2", None, c, lr_c, 21, ("sst2",)),
        Job("pico/t5-pico-food-sst2-b", "candidate", "food_reviews_b", "sst2", None, c, lr_c, 22, ("sst2",)),
        Job(
            "pico/t5-pico-grammar-agreement",
            "candidate",
            "grammar_agreement",
            "cola",
            None,
            c,
            lr_c,
            31,
            ("cola",),
        ),
        Job("pico/t5-pico-grammar-order", "candidate", "grammar_order", "cola", None, c, lr_c, 32, ("cola",)),
        Job(
            "pico/t5-pico-paraphrase-synonym",
            "candidate",
            "paraphrase_synonym",
            "mrpc",
            None,
            c,
            lr_c,
            41,
            ("mrpc",),
        ),
        Job(
            "pico/t5-pico-paraphrase-reorder",
            "candidate",
            "paraphrase_reorder",
            "mrpc",
            None,
            c,
            lr_c,
            42,
            ("mrpc",),
        ),
        Job(
            "pico/t5-pico-facts-contradiction",
            "candidate",
            "facts_contradiction",
            "rte",
            None,
            c,
            lr_c,
            51,
            ("rte",),
        ),
        Job("pico/t5-pico-facts-new", "candidate", "facts_new", "rte", None, c, lr_c, 52, ("rte",)),
        Job("pico/t5-pico-topic", "candidate", "topic", "topic", None, c, lr_c, 61, ()),
    ]
    if not tiny:
        jobs += [
            Job("pico/t5-pico-sst2-more", "candidate", "glue", "sst2", 160, c // 2, 3e-4, 23, ("sst2",)),
            Job("pico/t5-pico-grammar-drop", "candidate", "grammar_drop", "cola", None, c, lr_c, 33, ()),
            Job("pico/t5-pico-qqp", "candidate", "question_pairs", "qqp", None, c, lr_c, 43, ()),
            Job("pico/t5-pico-nli", "candidate", "nli", "mnli", None, c, lr_c, 53, ()),
            Job("pico/t5-pico-topic-fast", "candidate", "topic", "topic", 1000, c // 2, 1e-3, 62, ()),
        ]
    return jobs


def job_args(world: World, job: Job, datasets: list[Dataset]) -> dict[str, Any]:
    """The keyword arguments of `run_finetune_job` for `job` (plain, picklable values)."""
    ds = next(d for d in datasets if d.name == job.dataset and d.task == job.task)
    return {
        "out": str(world.out),
        "seed": world.seed,
        "job": job,
        "relpath": ds.relpath,
        "card_name": ds.card_name,
        "description": ds.description,
    }


def run_finetune_job(
    *, out: str, seed: int, job: Job, relpath: str, card_name: str, description: str
) -> tuple[str, dict]:
    """Fine-tune one zoo repo from the saved base and data (a picklable unit for worker processes).

    Reads the base and the training parquet from disk, so the result does not depend on which
    process runs it.

    Returns:
        `(repo id, manifest entry)`.
    """
    hf_logging.disable_progress_bar()  # the zoo's own bar reports progress
    torch.set_num_threads(1)
    root = Path(out)
    base_dir = root / "hub" / BASE_REPO
    model = T5ForConditionalGeneration.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    frame = pd.read_parquet(root / relpath / "train-00000-of-00001.parquet")
    frame = subsample(frame, max_train=job.n_train, seed=job.seed)
    pairs = task_pairs(get_task(job.task), frame)
    result = train_seq2seq(model, tokenizer, pairs, steps=job.steps, lr=job.lr, seed=seed * 1000 + job.seed)
    card = model_card(
        title=job.repo.split("/")[-1],
        base_model=BASE_REPO,
        datasets=[card_name],
        tags=["pico-zoo", f"task:{job.task}"],
        description=f"{BASE_REPO} fine-tuned on {card_name} ({job.task}: {description}).",
        details={
            "train examples": result.n_train,
            "steps": job.steps,
            "learning rate": job.lr,
            "seed": job.seed,
        },
    )
    save_checkpoint(model=model, tokenizer=tokenizer, out=root / "hub" / job.repo, card=card)
    info = {
        "path": f"hub/{job.repo}",
        "role": job.role,
        "task": job.task,
        "data": {"dataset": card_name, "path": relpath, "task": job.task, "n": result.n_train},
        "seed": job.seed,
        "lr": job.lr,
        "steps": job.steps,
        "final_loss": round(result.last_loss, 4),
        "reason": None,
        "expected_status": "compatible",
        "base_model": BASE_REPO,
    }
    if job.role == "candidate":
        info["helps"] = list(job.helps)
    return job.repo, info
