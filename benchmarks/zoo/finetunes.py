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
from search.finetune import TrainResult, model_card, save_checkpoint, subsample, task_pairs, train_seq2seq
from search.tasks import get_task
from search.tasks.provenance import rows_outside, search_exclusion, set_search_split_record

SEARCH_SEED = 0  # the search split's seed the product uses by default (`load_split(..., seed=0)`)
CONVERGED_LOSS = 0.25
"""A multi-task fine-tune whose mean training loss over its last steps is above this has not learnt its
task. Measured: seed 1's SST-2 model ended at 0.35 (49.5 held-out, base 50.7) and seed 2's CoLA one at
0.36 (MCC 15.9); every other one, on seeds 0 to 2, at 0.17 or below."""
MAX_CONTINUATIONS = 2
"""How many times such a fine-tune goes on for its steps again at half the learning rate (measured on
both: one continuation reaches SST-2 100.0 and CoLA 57.6). A rule on training loss only, stated before
any held-out score: seed 0's fine-tunes all converge and are unchanged by it."""


@dataclass(frozen=True)
class Job:
    """One fine-tuned repo of the zoo."""

    repo: str
    role: str  # target | candidate | multitask
    dataset: str
    task: str
    n_train: int | None
    steps: int
    lr: float
    seed: int
    helps: tuple[str, ...] = ()
    note: str = ""
    exclude_search: bool = False  # train on GLUE train minus the task's search split (targets)


TARGET_ROWS = {"sst2": 64, "cola": 40, "mrpc": 64, "rte": 40}
"""Training rows of the data-poor targets (drawn from GLUE train minus the search split). Fewer rows
leave more of each helper's half unlearnt, so pairs add on more seeds: measured, best pair >= best single
+ 2 on 4 / 3 / 2 / 4 / 4 tasks for seeds 0 to 4 (earlier machine), against 4 / 2 / 2 / 3 / 1 with v7's 160 / 80 / 160 / 80."""
TINY_TARGET_ROWS = {"sst2": 160, "cola": 80, "mrpc": 160, "rte": 80}
"""The tiny scale's targets keep more rows: the tests' expectations were measured on them."""
MULTITASK = {task: f"pico/t5-pico-{task}-ft" for task in TARGET_ROWS}
"""The multi-task stage's fine-tunes: all of GLUE train minus the search split, one per task."""


def zoo_jobs(scale: Scale, *, tiny: bool) -> list[Job]:
    """The fine-tunes of a build: the four data-poor targets and the candidates (fewer at tiny scale).

    Per task, two helpers each cover one disjoint half of the words that decide the label (adjectives,
    verbs, synonym pairs, attribute values), so a pair fixes more of the target's errors than either;
    a third (`-a2`) is a near-duplicate of the first (same half, another data draw and seed): it helps
    alone, but adding it to the pair counts that half twice.
    """
    t, c, lr_c = scale.target_steps, scale.candidate_steps, 2e-3  # 2e-3: related tasks learnt in budget
    jobs = [
        Job(f"pico/t5-pico-{task}", "target", "glue", task, n, t, 1e-3, seed, exclude_search=True)
        for seed, (task, n) in enumerate((TINY_TARGET_ROWS if tiny else TARGET_ROWS).items(), start=11)
    ]
    # SST-2 is learnt slowly from many rows at 1e-3 (measured: 57.5 held-out, base 48.3); at 2e-3 the
    # others' naive sum stopped interfering on one seed (MRPC), so they keep 1e-3.
    lr_mt = {"sst2": 2e-3}
    jobs += [
        Job(repo, "multitask", "glue", task, None, t, lr_mt.get(task, 1e-3), seed, exclude_search=True)
        for seed, (task, repo) in enumerate(MULTITASK.items(), start=71)
    ]
    helpers = {
        "sst2": ("food-sst2", "food_reviews", 21, 1e-3),  # measured: 2e-3 overshoots alone
        "cola": ("grammar-order", "grammar_order", 31, lr_c),
        "mrpc": ("paraphrase", "paraphrase", 41, lr_c),
        "rte": ("facts", "facts", 51, lr_c),
    }
    dup_rows = scale.aux_rows[0] * 2 // 3
    for task, (name, data, seed, lr) in helpers.items():
        jobs += [
            Job(f"pico/t5-pico-{name}-a", "candidate", f"{data}_a", task, None, c, lr, seed, (task,)),
            Job(f"pico/t5-pico-{name}-b", "candidate", f"{data}_b", task, None, c, lr, seed + 1, (task,)),
            Job(
                f"pico/t5-pico-{name}-a2", "candidate", f"{data}_a", task, dup_rows, c, lr, seed + 2, (task,)
            ),
        ]
    jobs.append(Job("pico/t5-pico-topic", "candidate", "topic", "topic", None, c, lr_c, 61, ()))
    if not tiny:
        jobs += [
            Job("pico/t5-pico-grammar-drop", "candidate", "grammar_drop", "cola", None, c, lr_c, 34, ()),
            Job("pico/t5-pico-qqp", "candidate", "question_pairs", "qqp", None, c, lr_c, 44, ()),
            Job("pico/t5-pico-nli", "candidate", "nli", "mnli", None, c, lr_c, 54, ()),
            Job("pico/t5-pico-topic-fast", "candidate", "topic", "topic", 1000, c, 1e-3, 62, ()),
        ]
    return jobs


def longest_first(jobs: list[Job]) -> list[Job]:
    """`jobs` by their most steps, longest first (a multi-task fine-tune may go on `MAX_CONTINUATIONS` times).

    Workers take jobs in this order, so the last ones to finish are short and no core idles long at the end.
    """
    return sorted(jobs, key=lambda j: -j.steps * (1 + MAX_CONTINUATIONS if j.role == "multitask" else 1))


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
    # Targets never train on the split they are searched on: the product's own rule and record.
    excluded = (
        search_exclusion(task=job.task, data_dir=root, split_seed=SEARCH_SEED) if job.exclude_search else None
    )
    if excluded is not None:
        frame = rows_outside(frame, excluded, where=f"{root / relpath}")
        set_search_split_record(model.config, excluded.record)
    frame = subsample(frame, max_train=job.n_train, seed=job.seed)
    pairs = task_pairs(get_task(job.task), frame)
    result, continued = _train(job, model, tokenizer, pairs, seed=seed * 1000 + job.seed)
    description = f"{BASE_REPO} fine-tuned on {card_name} ({job.task}: {description})."
    if excluded is not None:
        description += f"\n\n{excluded.card_line}"
    card = model_card(
        title=job.repo.split("/")[-1],
        base_model=BASE_REPO,
        datasets=[card_name],
        tags=["pico-zoo", f"task:{job.task}"],
        description=description,
        details={
            "train examples": result.n_train,
            "steps": job.steps,
            "learning rate": job.lr,
            "seed": job.seed,
            **({"continued (not converged)": continued} if continued else {}),
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
    if continued:
        info["continued"] = continued
    if job.role == "candidate":
        info["helps"] = list(job.helps)
    if excluded is not None:
        info["search_split"] = excluded.record
        info["train_idx"] = sorted(int(i) for i in frame["idx"])
    return job.repo, info


def _train(job: Job, model, tokenizer, pairs, *, seed: int) -> tuple[TrainResult, list[dict[str, float]]]:
    """Train `model` for `job`; a multi-task fine-tune that did not converge goes on at half the rate.

    Returns:
        The last run's result, and each continuation's `{lr, steps, loss}` (empty when none was needed).
    """
    result = train_seq2seq(model, tokenizer, pairs, steps=job.steps, lr=job.lr, seed=seed)
    continued: list[dict[str, float]] = []
    lr = job.lr
    while (
        job.role == "multitask" and result.last_loss > CONVERGED_LOSS and len(continued) < MAX_CONTINUATIONS
    ):
        lr /= 2
        result = train_seq2seq(
            model, tokenizer, pairs, steps=job.steps, lr=lr, seed=seed + len(continued) + 1
        )
        continued.append({"lr": lr, "steps": job.steps, "loss": round(result.last_loss, 4)})
    return result, continued
