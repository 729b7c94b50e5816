"""Build the offline pico world: GLUE-layout data, a T5 tokenizer, and a Hub-like zoo of pico T5 repos.

`build(out=DIR)` writes `DIR/glue`, `DIR/aux`, `DIR/hub/<org>/<name>` and `DIR/zoo.json`, then a
`.complete` stamp last; a complete build with the same seed and scale returns at once. Everything is
seeded and single-threaded, so two builds with the same seed give byte-identical files.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.zoo import grammar
from search.errors import DataError

ZOO_VERSION = 3  # bump when outputs change: caches of older builders are rebuilt
STAMP = ".complete"
BASE_REPO = "pico/t5-pico"
LICENSE = "apache-2.0"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Scale:
    """Sizes of one build scale."""

    glue_rows: tuple[int, int, int]  # train, validation, test
    aux_rows: tuple[int, int, int]
    corpus: int
    pretrain_steps: int
    target_steps: int
    candidate_steps: int
    decoy_steps: int


SCALES = {
    "full": Scale((2000, 600, 300), (3000, 300, 100), 20000, 1500, 300, 600, 60),
    "tiny": Scale((800, 200, 50), (1500, 100, 20), 8000, 800, 200, 500, 20),
}


@dataclass(frozen=True)
class Dataset:
    """A GLUE-layout dataset: `glue/<task>` (name `glue`) or `aux/<name>/<task>`."""

    name: str
    task: str
    make: Callable[[np.random.Generator, int], list[dict]]
    description: str

    @property
    def relpath(self) -> str:
        return f"glue/{self.task}" if self.name == "glue" else f"aux/{self.name}/{self.task}"

    @property
    def card_name(self) -> str:
        return f"pico/{self.name}"


def _datasets() -> list[Dataset]:
    g = grammar
    return [
        Dataset(
            "glue", "sst2", lambda r, n: g.sentiment_rows(r, n, domain="a"), "film reviews with negation"
        ),
        Dataset("glue", "cola", lambda r, n: g.grammar_rows(r, n, domain="a"), "agreement and order errors"),
        Dataset(
            "glue", "mrpc", lambda r, n: g.mrpc_rows(r, n, domain="a"), "synonym and reordering paraphrases"
        ),
        Dataset(
            "glue",
            "rte",
            lambda r, n: g.rte_rows(r, n, domain="a"),
            "fact subsets vs contradictions/new facts",
        ),
        Dataset(
            "food_reviews_a",
            "sst2",
            lambda r, n: g.sentiment_rows(r, n, domain="b", adjective_part=0),
            "restaurant reviews, first half of the sentiment adjectives",
        ),
        Dataset(
            "food_reviews_b",
            "sst2",
            lambda r, n: g.sentiment_rows(r, n, domain="b", adjective_part=1),
            "restaurant reviews, second half of the sentiment adjectives",
        ),
        Dataset(
            "grammar_agreement",
            "cola",
            lambda r, n: g.grammar_rows(r, n, domain="b", corruptions=("agreement",)),
            "object sentences, agreement errors only",
        ),
        Dataset(
            "grammar_order",
            "cola",
            lambda r, n: g.grammar_rows(r, n, domain="b", corruptions=("order",)),
            "object sentences, word-order errors only",
        ),
        Dataset(
            "grammar_drop",
            "cola",
            lambda r, n: g.grammar_rows(r, n, domain="b", corruptions=("drop",)),
            "object sentences, missing-word errors only (a corruption the target never sees)",
        ),
        Dataset(
            "paraphrase_synonym",
            "mrpc",
            lambda r, n: g.mrpc_rows(r, n, domain="b", kinds=("synonym",)),
            "paraphrases by synonyms only",
        ),
        Dataset(
            "paraphrase_reorder",
            "mrpc",
            lambda r, n: g.mrpc_rows(r, n, domain="b", kinds=("reorder",)),
            "paraphrases by clause reordering only",
        ),
        Dataset(
            "question_pairs", "qqp", lambda r, n: g.qqp_rows(r, n, domain="b"), "duplicate question pairs"
        ),
        Dataset(
            "facts_contradiction",
            "rte",
            lambda r, n: g.rte_rows(r, n, domain="b", negatives=("contradiction",)),
            "object facts, non-entailment by contradiction only",
        ),
        Dataset(
            "facts_new",
            "rte",
            lambda r, n: g.rte_rows(r, n, domain="b", negatives=("new_fact",)),
            "object facts, non-entailment by a new fact only",
        ),
        Dataset("nli", "mnli", lambda r, n: g.mnli_rows(r, n, domain="b"), "3-way NLI over object facts"),
        Dataset("topic", "topic", lambda r, n: g.topic_rows(r, n), "film vs restaurant review sentences"),
    ]


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


def _jobs(scale: Scale, tiny: bool) -> list[Job]:
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


@dataclass
class _World:
    out: Path
    seed: int
    scale: Scale
    frames: dict[str, dict] = field(default_factory=dict)  # relpath -> {split: DataFrame}
    corpus: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


def _read_stamp(out: Path) -> dict | None:
    try:
        return json.loads((Path(out) / STAMP).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(out: Path, *, seed: int, scale: str) -> bool:
    """Whether `out` holds a finished build with this seed, scale and builder version."""
    stamp = Path(out) / STAMP
    if not stamp.is_file():
        return False
    try:
        info = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return info == {"seed": seed, "scale": scale, "version": ZOO_VERSION}


def build(
    *, out: Path, seed: int = 0, scale: str = "full", progress: bool = True, workers: int | None = None
) -> Path:
    """Build the pico zoo into `out` (or return at once if a complete identical build is there).

    Args:
        out: output folder.
        seed: master seed; the same seed gives byte-identical parquet and safetensors files.
        scale: `full` (the demo's zoo) or `tiny` (tests: fewer rows and steps, fewer candidates).
        progress: show a progress bar.
        workers: processes for the fine-tunes (default: 2, or 1 on a single core); each runs
            single-threaded, so the files do not depend on it.

    Returns:
        `out`.

    Raises:
        DataError: for an unknown scale, or if `out` holds a complete build of another seed/scale.
    """
    if scale not in SCALES:
        raise DataError(f"unknown zoo scale {scale!r} (known: {', '.join(SCALES)})")
    out = Path(out)
    if is_complete(out, seed=seed, scale=scale):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Test sessions may share one zoo folder (TASKVEC_TEST_ZOO): one builds, the others wait and reuse.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(out, seed=seed, scale=scale):
            return out
        stamp = _read_stamp(out)
        if stamp is not None:
            if (stamp.get("seed"), stamp.get("scale")) != (seed, scale):
                raise DataError(f"{out}: holds a complete zoo of another seed/scale; choose another --out")
            # Same seed and scale from an older builder: rebuild from scratch.
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        _build_locked(out=out, seed=seed, scale=scale, progress=progress, workers=workers)
    return out


def _build_locked(*, out: Path, seed: int, scale: str, progress: bool, workers: int | None) -> None:
    import torch

    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible float sums
    try:
        _build(out=out, seed=seed, scale_name=scale, progress=progress, workers=workers)
    finally:
        torch.set_num_threads(threads)


def _build(*, out: Path, seed: int, scale_name: str, progress: bool, workers: int) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    scale = SCALES[scale_name]
    tiny = scale_name == "tiny"
    world = _World(out=out, seed=seed, scale=scale)
    jobs = _jobs(scale, tiny)
    steps = ["data", "tokenizer", "base", "fine-tunes", *[j.repo for j in jobs], "decoys", "manifest"]
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]zoo[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    ) as bar:
        tid = bar.add_task("data", total=len(steps))

        def advance(next_step: str) -> None:
            bar.update(tid, advance=1, description=next_step)

        datasets = _write_data(world, tiny=tiny)
        advance("tokenizer")
        tokenizer, vocab = _write_tokenizer(world)
        advance("base")
        base = _make_base(world, tokenizer, vocab)
        advance(f"fine-tuning {len(jobs)} repos ({workers} processes) + decoys")
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(run_finetune_job, **_job_args(world, j, datasets)) for j in jobs]
                # the decoys train in this process meanwhile
                _make_decoys(world, base, tokenizer, vocab, datasets)
                advance("decoys done")
                for future in futures:
                    repo, info = future.result()
                    world.manifest[repo] = info
                    advance(repo)
        else:
            for job in jobs:
                repo, info = run_finetune_job(**_job_args(world, job, datasets))
                world.manifest[repo] = info
                advance(repo)
            _make_decoys(world, base, tokenizer, vocab, datasets)
            advance("decoys done")
        advance("manifest")
        _write_manifest(world, scale_name=scale_name, datasets=datasets)
        bar.update(tid, advance=1, description=f"done in {time.perf_counter() - started:.0f}s")
    (out / STAMP).write_text(json.dumps({"seed": seed, "scale": scale_name, "version": ZOO_VERSION}))


# --- data ----------------------------------------------------------------------------------------------------


def _features(spec, columns: list[str]) -> dict:
    feats: dict[str, dict] = {}
    for col in columns:
        if col == "label":
            feats[col] = {"names": [spec.label_words[i] for i in spec.label_ids], "_type": "ClassLabel"}
        elif col == "idx":
            feats[col] = {"dtype": "int32", "_type": "Value"}
        else:
            feats[col] = {"dtype": "string", "_type": "Value"}
    return feats


def write_parquet(rows: list[dict], *, path: Path, task: str) -> None:
    """Write rows as one nyu-mll/glue parquet file (text columns, `label` int64, `idx` int32).

    The Hugging Face `datasets` feature metadata is embedded so `label` reads back as a ClassLabel;
    no timestamps are written, so the bytes depend on the rows only.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from search.tasks.glue import get_task

    spec = get_task(task)
    # nyu-mll/glue's column order: MNLI is premise, hypothesis; the prompt order lives in the TaskSpec.
    text_cols = ["premise", "hypothesis"] if task == "mnli" else list(spec.text_fields)
    columns = [*text_cols, "label", "idx"]
    arrays = [pa.array([str(r[c]) for r in rows], type=pa.string()) for c in text_cols]
    arrays.append(pa.array([int(r["label"]) for r in rows], type=pa.int64()))
    arrays.append(pa.array(list(range(len(rows))), type=pa.int32()))
    meta = {b"huggingface": json.dumps({"info": {"features": _features(spec, columns)}}).encode()}
    schema = pa.schema([pa.field(c, a.type) for c, a in zip(columns, arrays, strict=True)], metadata=meta)
    table = pa.Table.from_arrays(arrays, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="snappy", write_statistics=True)
    os.replace(tmp, path)


def _write_data(world: _World, *, tiny: bool) -> list[Dataset]:
    datasets = _datasets()
    for k, ds in enumerate(datasets):
        sizes = world.scale.glue_rows if ds.name == "glue" else world.scale.aux_rows
        rng = np.random.default_rng([world.seed, 1000 + k])
        frames = {}
        for split, n in zip(SPLITS, sizes, strict=True):
            rows = ds.make(rng, n)
            frame = pd.DataFrame(rows)
            frame["idx"] = np.arange(len(frame), dtype=np.int32)
            if split == "test":
                rows = [{**r, "label": -1} for r in rows]
            write_parquet(rows, path=world.out / ds.relpath / f"{split}-00000-of-00001.parquet", task=ds.task)
            frames[split] = frame
        world.frames[ds.relpath] = frames
    return datasets


# --- tokenizer and base ---------------------------------------------------------------------------------------


def _tokenizer_texts(world: _World) -> list[str]:
    from search.tasks.glue import get_task

    texts = list(world.corpus)
    for relpath, frames in sorted(world.frames.items()):
        task = relpath.split("/")[-1]
        spec = get_task(task)
        texts.extend(spec.format_input(r) for r in frames["train"].to_dict("records"))
        texts.extend(spec.label_words.values())
    return texts


def _write_tokenizer(world: _World):
    from benchmarks.zoo.tokenizer import fit_vocab, make_tokenizer

    world.corpus = grammar.corpus_sentences(np.random.default_rng([world.seed, 7]), world.scale.corpus)
    vocab = fit_vocab(_tokenizer_texts(world))
    return make_tokenizer(vocab), vocab


def _repo_dir(world: _World, repo: str) -> Path:
    return world.out / "hub" / repo


def _record(world: _World, repo: str, **info) -> None:
    world.manifest[repo] = {"path": f"hub/{repo}", **info}


def _make_base(world: _World, tokenizer, vocab):
    from benchmarks.zoo.models import new_model, pico_config, pretrain
    from search.finetune import model_card, save_checkpoint

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
    save_checkpoint(model=base, tokenizer=tokenizer, out=_repo_dir(world, BASE_REPO), card=card)
    _record(
        world,
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


# --- fine-tunes ---------------------------------------------------------------------------------------------


def _job_args(world: _World, job: Job, datasets: list[Dataset]) -> dict:
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
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    from search.finetune import model_card, save_checkpoint, subsample, task_pairs, train_seq2seq
    from search.tasks.glue import get_task

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


# --- decoys -------------------------------------------------------------------------------------------------


def _make_decoys(world: _World, base, tokenizer, vocab, datasets: list[Dataset]) -> None:
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
    from search.finetune import model_card, save_checkpoint, state_dict_for_saving, task_pairs
    from search.tasks.glue import get_task

    scale, seed = world.scale, world.seed
    sst2 = get_task("sst2")
    sst2_frame = world.frames["glue/sst2"]["train"]
    pairs = task_pairs(sst2, sst2_frame.iloc[:256])
    short = max(scale.pretrain_steps // 5, 50)
    data = {"dataset": "pico/glue", "path": "glue/sst2", "task": "sst2", "n": len(pairs)}

    def card(name: str, base_model: str | None, text: str) -> str:
        return model_card(
            title=name,
            base_model=base_model,
            datasets=["pico/glue"],
            tags=["pico-zoo", "task:sst2"],
            description=text,
        )

    def record(repo: str, reason: str, status: str, detail: str, base_model: str | None, **extra) -> None:
        _record(
            world,
            repo,
            role="decoy",
            task="sst2",
            data=data,
            seed=seed,
            lr=5e-4,
            steps=scale.decoy_steps,
            reason=reason,
            expected_status=status,
            detail=detail,
            base_model=base_model,
            **extra,
        )

    def tuned(from_model, k: int):
        return finetune_copy(
            from_model, tokenizer, pairs, steps=scale.decoy_steps, lr=5e-4, seed=seed * 1000 + 900 + k
        )[0]

    # Another size: shapes differ from the base.
    repo = "pico/t5-pico-mini-sst2"
    mini = new_model(pico_config(vocab_size=len(vocab), d_model=32, d_ff=128, num_heads=2), seed=seed + 101)
    pretrain(mini, tokenizer, world.corpus[: 32 * short], steps=short, seed=seed + 101)
    save_checkpoint(
        model=tuned(mini, 1),
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, "pico/t5-pico-mini", "A smaller pico T5 (d_model 32)."),
    )
    record(
        repo,
        "config_mismatch",
        "incompatible",
        "d_model 32, d_ff 128, 2 heads (base: 64, 256, 4)",
        "pico/t5-pico-mini",
    )

    # Gated-GELU variant (the T5 v1.1 family): same sizes, another feed-forward.
    repo = "pico/t5-pico-gated-sst2"
    gated = new_model(pico_config(vocab_size=len(vocab), feed_forward_proj="gated-gelu"), seed=seed + 102)
    pretrain(gated, tokenizer, world.corpus[: 32 * short], steps=short, seed=seed + 102)
    save_checkpoint(
        model=tuned(gated, 2),
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, "pico/t5-pico-v1_1", "A gated-GELU pico T5 (T5 v1.1 family)."),
    )
    record(
        repo,
        "config_mismatch",
        "incompatible",
        "feed_forward_proj gated-gelu (base: relu)",
        "pico/t5-pico-v1_1",
    )

    # Other lineage: identical shapes, pretrained independently from another seed.
    repo = "pico/t5-pico-seed1"
    other = new_model(pico_config(vocab_size=len(vocab)), seed=seed + 1)
    pretrain(other, tokenizer, world.corpus, steps=short, seed=seed + 1)
    save_checkpoint(
        model=other,
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, None, "A pico T5 pretrained from another seed (not the base)."),
    )
    record(repo, "lineage_mismatch", "incompatible", "same shapes, independently pretrained (seed + 1)", None)

    # A false card: fine-tuned from the other lineage while claiming the base.
    repo = "pico/t5-pico-sst2-claims-base"
    save_checkpoint(
        model=tuned(other, 3),
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, BASE_REPO, f"Claims to be fine-tuned from {BASE_REPO}."),
    )
    record(
        repo,
        "lineage_mismatch",
        "incompatible",
        "card claims pico/t5-pico; weights descend from pico/t5-pico-seed1",
        BASE_REPO,
    )

    # Integrity: a truncated weight file, and NaN/inf weights.
    repo = "pico/t5-pico-truncated-sst2"
    save_checkpoint(
        model=tuned(base, 4),
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, BASE_REPO, "A download cut short."),
    )
    truncate_safetensors(_repo_dir(world, repo))
    record(
        repo,
        "integrity",
        "broken",
        "model.safetensors cut at 60% of its data (header intact)",
        BASE_REPO,
        truncated=True,
    )

    repo = "pico/t5-pico-nan-sst2"
    model = tuned(base, 5)
    save_checkpoint(
        model=model,
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, BASE_REPO, "Diverged training."),
        state=poisoned_state(model),
    )
    record(
        repo,
        "integrity",
        "broken",
        "NaN in shared.weight, NaN/inf in encoder.block.0.layer.1.DenseReluDense.wi.weight",
        BASE_REPO,
    )

    # Pickle only: weights a registry must not unpickle blindly (and cannot verify without loading).
    repo = "pico/t5-pico-pickle-sst2"
    save_checkpoint(
        model=tuned(base, 6),
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, BASE_REPO, "Weights only as pytorch_model.bin."),
        weights_format="pickle",
    )
    record(
        repo, "pickle_only", "unverified", "only pytorch_model.bin (a real fine-tune of the base)", BASE_REPO
    )

    # Not T5 at all.
    repo = "pico/bart-pico"
    save_not_t5(
        out=_repo_dir(world, repo),
        tokenizer=tokenizer,
        vocab_size=len(vocab),
        seed=seed + 103,
        card=card(repo, None, "A pico BART (model_type bart)."),
    )
    record(repo, "not_t5", "incompatible", "model_type bart", None)

    # Another vocabulary: same pieces in another id order, so ids mean other words.
    repo = "pico/t5-pico-othertok-sst2"
    other_tok = make_tokenizer(fit_vocab(_tokenizer_texts(world), permute_seed=seed + 104))
    model = tuned(base, 7)
    save_checkpoint(
        model=model,
        tokenizer=other_tok,
        out=_repo_dir(world, repo),
        card=card(repo, BASE_REPO, "Saved with a different vocabulary."),
    )
    record(
        repo,
        "tokenizer_mismatch",
        "incompatible",
        "same config and size, vocabulary in another id order",
        BASE_REPO,
    )

    # An extra tensor: a classification head the base does not have.
    repo = "pico/t5-pico-head-sst2"
    model = tuned(base, 8)
    state = state_dict_for_saving(model)
    import torch

    gen = torch.Generator().manual_seed(seed + 105)
    state["classifier.weight"] = torch.randn(2, model.config.d_model, generator=gen)
    state["classifier.bias"] = torch.zeros(2)
    save_checkpoint(
        model=model,
        tokenizer=tokenizer,
        out=_repo_dir(world, repo),
        card=card(repo, BASE_REPO, "Fine-tuned with an extra classification head."),
        state=state,
    )
    record(
        repo, "tensor_mismatch", "incompatible", "extra tensors classifier.weight, classifier.bias", BASE_REPO
    )


# --- manifest -----------------------------------------------------------------------------------------------


def _write_manifest(world: _World, *, scale_name: str, datasets: list[Dataset]) -> None:
    manifest = {
        "seed": world.seed,
        "scale": scale_name,
        "version": ZOO_VERSION,
        "base": BASE_REPO,
        "targets": {t: f"pico/t5-pico-{t}" for t in ("cola", "sst2", "mrpc", "rte")},
        "datasets": {
            f"{d.name}/{d.task}": {"path": d.relpath, "task": d.task, "description": d.description}
            for d in datasets
        },
        "repos": dict(sorted(world.manifest.items())),
    }
    path = world.out / "zoo.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def load_manifest(zoo: Path) -> dict:
    """The `zoo.json` of a built zoo.

    Raises:
        DataError: if it is missing or malformed.
    """
    path = Path(zoo) / "zoo.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(
            f"{path}: no zoo manifest (build it with `python -m benchmarks.zoo build --out {zoo}`)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg})") from exc


def clean(out: Path) -> None:
    """Remove a zoo folder (tests and rebuilds)."""
    shutil.rmtree(out, ignore_errors=True)
