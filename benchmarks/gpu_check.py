"""GPU checks for a machine with CUDA: the GPU scores as the CPU does, a search runs there, and how much faster.

In one run, side by side:
1. Agreement: the zoo's targets (`pico/t5-pico-<task>`) score their held-out splits on the CPU in fp32 and
   on the GPU in fp32 and in bf16 autocast. fp32 must give identical predictions; bf16 >= 99% identical
   predictions and a score within 0.5 point of the CPU's.
2. A 4-trial search on the GPU: registry sync of the zoo, screening of one task's candidates and an
   Optuna search, every stage on the GPU (`--device cuda`, the default bf16).
3. Throughput (examples/s) of the rank scorer on the CPU (fp32, all cores) and on the GPU (fp32 and bf16)
   for three shapes: the pico target, and random weights at t5-small's and t5-base's real configs
   (vocab 32128; the pico tokenizer's ids all fit in it, as in `benchmarks.bench_scoring`). The ratio
   GPU/CPU is measured in this one run.

Where CUDA is absent it exits with one line (status 1). `--cpu-only-smoke` runs every step with the CPU
standing in for the GPU (bf16 autocast on the CPU, small shapes and counts): a test of this script on a
machine without a GPU, not a measurement.

Usage: python -m benchmarks.gpu_check [--zoo DIR] [--tasks mrpc,rte,cola,sst2] [--search-task sst2]
       [--trials 4] [--cpu-only-smoke]
Last line of output: one JSON object with every figure and `ok`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from transformers import T5Config, T5ForConditionalGeneration

from benchmarks.bench_scoring import T5_BASE, T5_SMALL
from benchmarks.zoo import full_zoo, load_manifest
from registry.constants import ENV_HOME
from registry.sync import sync
from search.scoring.device import resolve
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer
from search.screen import screen
from search.study import SearchConfig, run_search
from search.tasks import Split, load_split
from search.tasks.glue import GLUE_TASKS

BASE_REPO = "pico/t5-pico"
TARGET_FMT = "pico/t5-pico-{task}"
# The smoke run's stand-ins for the real shapes: the same code path, seconds on two loaded cores.
SMOKE_SMALL = {**T5_SMALL, "vocab_size": 4096, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_heads": 4}
SMOKE_BASE = {**SMOKE_SMALL, "num_layers": 3, "num_decoder_layers": 3}

MIN_FP32_AGREEMENT = 1.0
MIN_BF16_AGREEMENT = 0.99
MAX_BF16_SCORE_DIFF = 0.5


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def gpu_device(*, smoke: bool) -> torch.device:
    """The device standing for the GPU: CUDA, or the CPU in a smoke run.

    Exits with one line (status 1) where CUDA is absent and this is not a smoke run.
    """
    if smoke:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        print(f"gpu_check: CUDA is not available ({why}); run it on a machine with a GPU", file=sys.stderr)
        raise SystemExit(1)
    return resolve("cuda").device


def check_agreement(zoo: Path, *, tasks: list[str], gpu: torch.device, size: int | None) -> list[dict]:
    """Per task: the target's held-out scores on the CPU (fp32) and the GPU (fp32, bf16), and agreement."""
    rows = []
    for task in tasks:
        folder = zoo / "hub" / TARGET_FMT.format(task=task)
        split = load_split(task, split="heldout", data_dir=zoo / "glue", size=size)
        cpu_model, tokenizer = load_seq2seq(folder)
        gpu_model, _ = load_seq2seq(folder, device=gpu)
        cpu = Scorer(cpu_model, tokenizer, split).score()
        fp32 = Scorer(gpu_model, tokenizer, split).score()
        bf16 = Scorer(gpu_model, tokenizer, split, autocast_dtype=torch.bfloat16).score()
        row = {
            "task": task,
            "n": cpu.n,
            "score_cpu": cpu.score,
            "score_gpu_fp32": fp32.score,
            "score_gpu_bf16": bf16.score,
            "fp32_agreement": float(np.mean(cpu.predictions == fp32.predictions)),
            "bf16_agreement": float(np.mean(cpu.predictions == bf16.predictions)),
            "bf16_score_diff": bf16.score - cpu.score,
            "fp32_max_margin_diff": float(np.nanmax(np.abs(cpu.margins - fp32.margins))),
        }
        row["ok"] = (
            row["fp32_agreement"] >= MIN_FP32_AGREEMENT
            and row["bf16_agreement"] >= MIN_BF16_AGREEMENT
            and abs(row["bf16_score_diff"]) <= MAX_BF16_SCORE_DIFF
        )
        rows.append(row)
        _say(f"agreement {task}: fp32 {row['fp32_agreement']:.4f}, bf16 {row['bf16_agreement']:.4f}")
        del gpu_model
    return rows


def check_search(
    zoo: Path, *, task: str, gpu: torch.device, dtype: str, trials: int, work: Path, smoke: bool
) -> dict:
    """Sync the zoo, screen `task`'s candidates and run a `trials`-trial search, all on `gpu`."""
    db_url, storage = f"sqlite:///{work / 'taskvec.db'}", f"sqlite:///{work / 'optuna.db'}"
    vectors = work / "vectors"
    target = TARGET_FMT.format(task=task)
    search_size = 96 if smoke else None
    times = {}
    t0 = time.perf_counter()
    sync(base=BASE_REPO, source=str(zoo / "hub"), db_url=db_url, progress=False)
    times["sync_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    screened = screen(
        task=task,
        target=target,
        db_url=db_url,
        data_dir=zoo / "glue",
        lambdas=(0.5,) if smoke else (0.2, 0.5, 1.0),
        limit=3 if smoke else None,
        search_size=search_size,
        exclude=tuple(load_manifest(zoo).get("multitask", {}).values()),
        vector_cache=vectors,
        progress=False,
        device=str(gpu),
        dtype=dtype,
    )
    times["screen_s"] = time.perf_counter() - t0
    config = SearchConfig(
        task=task,
        target=target,
        data_dir=zoo / "glue",
        top_k=3 if smoke else 4,
        n_trials=trials,
        storage=storage,
        db_url=db_url,
        search_size=search_size,
        heldout_top_n=1,
        baselines=False,
        vector_cache=vectors,
        device=str(gpu),
        dtype=dtype,
    )
    t0 = time.perf_counter()
    summary = run_search(config, progress=False)
    times["search_s"] = time.perf_counter() - t0
    _say(f"search {task}: {summary.n_finished} trials on {gpu} in {times['search_s']:.1f}s")
    return {
        "task": task,
        "study": summary.study_name,
        "screened": len(screened),
        "n_finished": summary.n_finished,
        "best_score_search": summary.best_score_search,
        "target_score_search": summary.target_score_search,
        **times,
        "ok": summary.n_finished >= trials,
    }


def _examples(zoo: Path, task: str, n: int) -> Split:
    """`n` examples of `task`'s train file (tiled when it has fewer): inputs of real GLUE-like lengths."""
    frame = pd.read_parquet(zoo / "glue" / task / "train-00000-of-00001.parquet")
    frame = pd.concat([frame] * (n // len(frame) + 1), ignore_index=True).iloc[:n]
    return Split(
        task=task, name="throughput", examples=frame.reset_index(drop=True), fingerprint=f"{task}:{n}"
    )


def _rate(model, tokenizer, split: Split, *, autocast: torch.dtype | None, repeats: int = 2) -> float:
    """Examples/s of `score()` (best of `repeats`, after a warm-up on a few examples)."""
    scorer = Scorer(model, tokenizer, split, autocast_dtype=autocast)
    scorer.score(prefix=min(len(split), 16))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        scorer.score()
        best = min(best, time.perf_counter() - t0)
    return len(split) / best


def throughput(zoo: Path, *, task: str, gpu: torch.device, smoke: bool) -> list[dict]:
    """CPU (fp32) and GPU (fp32, bf16) examples/s per shape, with the GPU/CPU ratio of each."""
    pico_model, tokenizer = load_seq2seq(zoo / "hub" / TARGET_FMT.format(task=task))
    small, base = (SMOKE_SMALL, SMOKE_BASE) if smoke else (T5_SMALL, T5_BASE)
    counts = {  # (CPU examples, GPU examples): each side timed long enough to be steady
        "pico": (64, 64) if smoke else (1000, 8000),
        "t5-small": (32, 32) if smoke else (256, 4096),
        "t5-base": (16, 16) if smoke else (64, 2048),
    }
    rows = []
    for shape, config in (("pico", None), ("t5-small", small), ("t5-base", base)):
        if config is None:
            model = pico_model
        else:
            torch.manual_seed(0)
            model = T5ForConditionalGeneration(T5Config(**config)).eval()
        n_cpu, n_gpu = counts[shape]
        cpu_rate = _rate(model, tokenizer, _examples(zoo, task, n_cpu), autocast=None)
        model.to(gpu)
        gpu_split = _examples(zoo, task, n_gpu)
        fp32_rate = _rate(model, tokenizer, gpu_split, autocast=None)
        bf16_rate = _rate(model, tokenizer, gpu_split, autocast=torch.bfloat16)
        rows.append(
            {
                "shape": shape,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "cpu_ex_per_s": cpu_rate,
                "gpu_fp32_ex_per_s": fp32_rate,
                "gpu_bf16_ex_per_s": bf16_rate,
                "gpu_bf16_over_cpu": bf16_rate / cpu_rate,
                "gpu_fp32_over_cpu": fp32_rate / cpu_rate,
            }
        )
        _say(f"throughput {shape}: cpu {cpu_rate:.0f}/s, gpu bf16 {bf16_rate:.0f}/s")
        del model
        if gpu.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _tables(agreement: list[dict], search: dict, speed: list[dict], *, gpu: str) -> list[Table]:
    first = Table(title=f"held-out scores: CPU fp32 vs {gpu} (fp32, bf16)")
    for col in ("task", "n", "cpu", "gpu fp32", "gpu bf16", "fp32 same", "bf16 same", "bf16 diff", "ok"):
        first.add_column(col, justify="right")
    for r in agreement:
        first.add_row(
            r["task"],
            str(r["n"]),
            f"{r['score_cpu']:.2f}",
            f"{r['score_gpu_fp32']:.2f}",
            f"{r['score_gpu_bf16']:.2f}",
            f"{100 * r['fp32_agreement']:.2f}%",
            f"{100 * r['bf16_agreement']:.2f}%",
            f"{r['bf16_score_diff']:+.2f}",
            "yes" if r["ok"] else "NO",
        )
    second = Table(title=f"search on {gpu}: {search['n_finished']} trials of {search['task']}")
    for col in ("sync s", "screen s", "search s", "screened", "target", "best"):
        second.add_column(col, justify="right")
    second.add_row(
        f"{search['sync_s']:.1f}",
        f"{search['screen_s']:.1f}",
        f"{search['search_s']:.1f}",
        str(search["screened"]),
        f"{search['target_score_search']:.2f}",
        "-" if search["best_score_search"] is None else f"{search['best_score_search']:.2f}",
    )
    third = Table(
        title=f"rank scoring throughput, examples/s: CPU ({torch.get_num_threads()} threads) vs {gpu}"
    )
    for col in ("shape", "params M", "cpu fp32", "gpu fp32", "gpu bf16", "bf16 / cpu", "fp32 / cpu"):
        third.add_column(col, justify="right")
    for r in speed:
        third.add_row(
            r["shape"],
            f"{r['params_m']:.1f}",
            f"{r['cpu_ex_per_s']:.0f}",
            f"{r['gpu_fp32_ex_per_s']:.0f}",
            f"{r['gpu_bf16_ex_per_s']:.0f}",
            f"{r['gpu_bf16_over_cpu']:.1f}x",
            f"{r['gpu_fp32_over_cpu']:.1f}x",
        )
    return [first, second, third]


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry: the three checks; tables, then one JSON line."""
    args = _parser().parse_args(argv)
    smoke = args.cpu_only_smoke
    gpu = gpu_device(smoke=smoke)
    zoo = full_zoo(args.zoo)  # shared with bench_scoring
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    t0 = time.perf_counter()
    agreement = check_agreement(zoo, tasks=tasks, gpu=gpu, size=64 if smoke else None)
    home = os.environ.get(ENV_HOME)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        os.environ[ENV_HOME] = str(Path(work) / "home")  # nothing lands in the user's taskvec home
        search = check_search(
            zoo,
            task=args.search_task,
            gpu=gpu,
            dtype="bf16" if smoke else "auto",  # smoke: the bf16 path on the CPU's autocast
            trials=args.trials,
            work=Path(work),
            smoke=smoke,
        )
    if home is None:
        os.environ.pop(ENV_HOME, None)
    else:
        os.environ[ENV_HOME] = home
    speed = throughput(zoo, task=args.search_task, gpu=gpu, smoke=smoke)
    name = "cpu (smoke)" if smoke else torch.cuda.get_device_name(gpu)
    console = Console(width=140)
    for table in _tables(agreement, search, speed, gpu=name):
        console.print(table)
    summary = {
        "device": name,
        "smoke": smoke,
        "cpu_threads": torch.get_num_threads(),
        "agreement": agreement,
        "search": search,
        "throughput": speed,
        "wall_s": time.perf_counter() - t0,
        "ok": all(r["ok"] for r in agreement) and search["ok"],
    }
    print(json.dumps(summary))
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--zoo", type=Path, default=None, help="built pico zoo (default: build the seed-0 one)"
    )
    parser.add_argument("--tasks", default=",".join(GLUE_TASKS), help="targets whose scores are compared")
    parser.add_argument("--search-task", default="sst2", help="task of the search (and throughput inputs)")
    parser.add_argument("--trials", type=int, default=4, help="trials of the GPU search")
    parser.add_argument(
        "--cpu-only-smoke", action="store_true", help="run every step with the CPU as the GPU (a test)"
    )
    return parser


if __name__ == "__main__":
    main()
