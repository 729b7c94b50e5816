"""Build the offline pico world: GLUE-layout data, a T5 tokenizer, and a Hub-like zoo of pico T5 repos.

`build(out=DIR)` writes `DIR/glue`, `DIR/aux`, `DIR/hub/<org>/<name>` and `DIR/zoo.json`, then a
`.complete` stamp last; a complete build with the same seed and scale returns at once. Everything is
seeded, single-threaded and on pinned float kernels (`numerics`), so two builds with the same seed give
byte-identical files, on any x86 machine.

The steps, in order: data and corpus (`data`), tokenizer, base (`base`) while the decoys pretrained from
scratch train in a worker (`decoys`), then the fine-tunes (`finetunes`, in the workers, longest first)
while the decoys from the base train in this process, then the manifest (`manifest`).
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from benchmarks.zoo.base import make_base
from benchmarks.zoo.data import Dataset, write_data, write_parquet, write_tokenizer
from benchmarks.zoo.decoys import decoy_pairs, make_base_decoys, run_scratch_decoys
from benchmarks.zoo.finetunes import Job, job_args, longest_first, run_finetune_job, zoo_jobs
from benchmarks.zoo.manifest import load_manifest, write_manifest
from benchmarks.zoo.numerics import build_in_pinned_child, needs_pinning
from benchmarks.zoo.world import BASE_REPO, SCALES, STAMP, ZOO_VERSION, World
from registry.progress import progress_bar
from search.errors import DataError

__all__ = [
    "BASE_REPO",
    "SCALES",
    "ZOO_VERSION",
    "FULL_ZOO",
    "build",
    "clean",
    "full_zoo",
    "is_complete",
    "load_manifest",
    "run_finetune_job",
    "write_parquet",
]


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


FULL_ZOO = Path(".cache/zoo-full")  # the benchmarks' shared seed-0 full zoo, under the working folder


def full_zoo(given: Path | None = None) -> Path:
    """`given` as it is (whatever its seed), else the seed-0 full zoo at `FULL_ZOO`, built there if missing."""
    return Path(given) if given is not None else build(out=FULL_ZOO, seed=0, scale="full")


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
    if needs_pinning():  # this process's kernels are the machine's: build where they are the zoo's
        return build_in_pinned_child(out=out, seed=seed, scale=scale, progress=progress, workers=workers)
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
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reproducible float sums
    try:
        _build(out=out, seed=seed, scale_name=scale, progress=progress, workers=workers)
    finally:
        torch.set_num_threads(threads)


def _build(*, out: Path, seed: int, scale_name: str, progress: bool, workers: int) -> None:
    scale = SCALES[scale_name]
    world = World(out=out, seed=seed, scale=scale)
    jobs = zoo_jobs(scale, tiny=scale_name == "tiny")
    steps = ["data", "tokenizer", "base", "fine-tunes", *[j.repo for j in jobs], "decoys", "manifest"]
    started = time.perf_counter()
    with progress_bar(
        TextColumn("[bold]zoo[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        enabled=progress,
    ) as bar:
        tid = bar.add_task("data", total=len(steps))

        def advance(next_step: str) -> None:
            bar.update(tid, advance=1, description=next_step)

        datasets = write_data(world)
        advance("tokenizer")
        tokenizer, vocab = write_tokenizer(world)
        advance("base (decoys from scratch beside it)")
        _train_all(
            world,
            jobs,
            datasets,
            scale_name=scale_name,
            models=(tokenizer, vocab),
            workers=workers,
            advance=advance,
        )
        advance("manifest")
        write_manifest(world, scale_name=scale_name, datasets=datasets)
        bar.update(tid, advance=1, description=f"done in {time.perf_counter() - started:.0f}s")
    (out / STAMP).write_text(json.dumps({"seed": seed, "scale": scale_name, "version": ZOO_VERSION}))


def _train_all(
    world: World,
    jobs: list[Job],
    datasets: list[Dataset],
    *,
    scale_name: str,
    models: tuple[Any, list[tuple[str, float]]],
    workers: int,
    advance: Callable[[str], None],
) -> None:
    """Train the base, the fine-tunes and the decoys, with `workers` processes beside this one; record every repo.

    Every step runs single-threaded from its own seeds, so the files do not depend on where it runs; the
    schedule only keeps both cores busy: the base alone would leave one idle for its whole training.
    """
    tokenizer, vocab = models
    scratch = {
        "out": str(world.out),
        "seed": world.seed,
        "scale_name": scale_name,
        "corpus": world.corpus,
        "vocab": vocab,
        "pairs": decoy_pairs(world),
    }
    if workers <= 1:
        world.manifest.update(run_scratch_decoys(**scratch))
        base = make_base(world, tokenizer, vocab)
        advance(f"fine-tuning {len(jobs)} repos + decoys")
        make_base_decoys(world, base, tokenizer, vocab)
        advance("decoys done")
        for job in jobs:
            repo, info = run_finetune_job(**job_args(world, job, datasets))
            world.manifest[repo] = info
            advance(repo)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        from_scratch = pool.submit(run_scratch_decoys, **scratch)
        base = make_base(world, tokenizer, vocab)
        advance(f"fine-tuning {len(jobs)} repos ({workers} processes) + decoys")
        # The fine-tunes read the saved base; the longest go first, so no long one is left alone at the end.
        futures = [pool.submit(run_finetune_job, **job_args(world, j, datasets)) for j in longest_first(jobs)]
        make_base_decoys(world, base, tokenizer, vocab)
        world.manifest.update(from_scratch.result())
        advance("decoys done")
        for future in as_completed(futures):
            repo, info = future.result()
            world.manifest[repo] = info
            advance(repo)


def clean(out: Path) -> None:
    """Remove a zoo folder (tests and rebuilds)."""
    shutil.rmtree(out, ignore_errors=True)
