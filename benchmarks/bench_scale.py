"""Rehearsal at real shape: the whole pipeline on a t5-small-shaped world through the loopback Hub.

A random t5-small base, 12 perturbed fine-tunes sharing its lineage (single-file, sharded, fp16 and
`.bin`-only) and decoys (`benchmarks/scale_world.py`) are served by `tests/hub_server.py` on 127.0.0.1 to
the real huggingface_hub client. Each stage runs as the user runs it, `taskvec ...` in its own process,
with its own Hugging Face cache and taskvec home under the work folder:

  sync (--metadata-only --verify-pickles) -> screen (3 lambdas, 200 examples, --max-cached 2)
  -> search (4 trials) -> export

Per stage: wall time, bytes the Hub served, the process's peak RSS (`wait4`), and the peak disk of the
work folder (sampled every 0.2 s). Then the projected hours of the paper's workload (427 t5-base
candidates screened at 7 lambdas x 1000 examples, 500 trials over the four tasks' 1000-example search
splits, no pruning) from per-example and per-parameter costs measured here, side by side with the same
projection at t5-small shape so the ratio t5-base / t5-small is measured in one run. No GPU figure exists
unless `benchmarks/gpu_check.py` ran on one (its throughput can be passed with --gpu-examples-per-s).
Downloads are not projected as time (network-bound): their bytes are.

Usage: python -m benchmarks.bench_scale [--zoo DIR] [--work DIR] [--finetunes 12] [--keep]
Last line of output: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.bench_scoring import T5_BASE, T5_SMALL
from benchmarks.scale_world import BASE, TARGET, TARGET_TASK, build_world, random_t5
from benchmarks.zoo import build
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer
from search.tasks.data import Split, load_split
from search.vectors.composer import Composer
from search.vectors.taskvector import TaskVector
from tests.hub_server import serve

PAPER = {
    "candidates": 427,
    "lambdas": 7,
    "screen_examples": 1000,
    "trials": 500,
    "tasks": 4,
    "trial_examples": 1000,
}
GB = 1e9


@dataclass
class Stage:
    """One stage's measured cost."""

    name: str
    seconds: float
    bytes_fetched: int
    peak_rss_mb: float
    peak_disk_mb: float
    returncode: int


def _disk_bytes(root: Path) -> int:
    """Bytes of regular files under root (links not followed: the HF cache links snapshots to blobs)."""
    total = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    total += e.stat(follow_symlinks=False).st_size
            except OSError:
                pass  # a file deleted while we looked
    return total


def run_stage(name: str, argv: list[str], *, env: dict[str, str], hub, work: Path) -> tuple[Stage, str]:
    """Run `taskvec argv` in its own process; returns its cost and its stdout."""
    hub.reset_counters()
    peak = [_disk_bytes(work)]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _disk_bytes(work))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    cmd = [sys.executable, "-c", "from search.cli import main; main()", *argv]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE, text=False)
        err = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
        out.seek(0)
        stdout = out.read().decode()
    peak[0] = max(peak[0], _disk_bytes(work))
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"bench_scale: stage {name} failed ({proc.returncode}): " + " | ".join(tail))
    stage = Stage(
        name=name,
        seconds=round(seconds, 2),
        bytes_fetched=hub.total_bytes(),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        peak_disk_mb=round(peak[0] / 1e6, 1),
        returncode=proc.returncode,
    )
    return stage, stdout


def _pipeline(*, world_root: Path, zoo: Path, work: Path, max_cached: int | None) -> tuple[list[Stage], dict]:
    stages: list[Stage] = []
    with serve(world_root) as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_CACHE": str(work / "hf"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TASKVEC_HOME": str(work / "home"),
        }
        env.pop("TASKVEC_DB", None)
        env.pop("HF_HUB_OFFLINE", None)
        sync = [
            "registry",
            "sync",
            "--base",
            BASE,
            "--source",
            "hub",
            "--search",
            "scale/",
            "--metadata-only",  # at Hub scale: a weight scan would cache every candidate (README)
            "--verify-pickles",
        ]
        stages.append(run_stage("sync", sync, env=env, hub=hub, work=work)[0])
        screen = ["screen", "--task", TARGET_TASK, "--target", TARGET, "--data", str(zoo), "--json"]
        screen += ["--lambdas", "0.1,0.3,0.5", "--search-size", "200"]
        if max_cached is not None:
            screen += ["--max-cached", str(max_cached)]
        stage, out = run_stage("screen", screen, env=env, hub=hub, work=work)
        stages.append(stage)
        screened = json.loads(out)
        search = ["search", "--task", TARGET_TASK, "--target", TARGET, "--data", str(zoo), "--json"]
        search += ["--trials", "4", "--top-k", "4", "--min-gain", "-100", "--search-size", "200"]
        search += ["--heldout-top", "1"]
        stage, out = run_stage("search", search, env=env, hub=hub, work=work)
        stages.append(stage)
        study = json.loads(out)["study_name"]
        export = ["export", "--study", study, "--out", str(work / "export")]
        stages.append(run_stage("export", export, env=env, hub=hub, work=work)[0])
    facts = {"screened": len(screened), "study": study}
    return stages, facts


def _per_example_s(model, *, tokenizer, split: Split) -> float:
    """Seconds per example of rank scoring `model` (random weights) on `split`."""
    n = len(split)
    scorer = Scorer(model, tokenizer, split)
    scorer.score(prefix=min(16, n))  # warm-up
    started = time.perf_counter()
    scorer.score()
    return (time.perf_counter() - started) / n


def _compose_s(base, *, k: int, work: Path) -> tuple[float, float]:
    """(seconds to extract one vector, seconds to compose k vectors) at `base`'s shape, from folders on
    disk; `base` is left perturbed."""
    folder_b, folder_f = work / "cost-base", work / "cost-ft"
    base.save_pretrained(folder_b)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    base.save_pretrained(folder_f)
    started = time.perf_counter()
    vector = TaskVector.from_checkpoints(base=folder_b, finetuned=folder_f)
    extract = time.perf_counter() - started
    composer = Composer(base, target=folder_f, vectors=[vector] * k)
    composer.apply([0.1] * k)  # warm-up
    started = time.perf_counter()
    composer.apply([0.2] * k)
    compose = time.perf_counter() - started
    shutil.rmtree(folder_b)
    shutil.rmtree(folder_f)
    return extract, compose


def project(*, per_example_s: float, extract_s: float, compose_s: float, model_bytes: int) -> dict:
    """Hours of the paper's workload at these unit costs (one device, no pruning, no racing)."""
    p = PAPER
    screen_h = (p["candidates"] * (p["lambdas"] * p["screen_examples"] * per_example_s + extract_s)) / 3600
    search_h = p["trials"] * (p["tasks"] * p["trial_examples"] * per_example_s + compose_s) / 3600
    return {
        "screen_h": round(screen_h, 2),
        "search_h": round(search_h, 2),
        "total_h": round(screen_h + search_h, 2),
        "download_gb": round(p["candidates"] * model_bytes / GB, 1),
    }


def projections(*, zoo: Path, tokenizer_dir: Path, work: Path, n: int, gpu_rate: float | None) -> dict:
    out: dict = {}
    _, tokenizer = load_seq2seq(tokenizer_dir)  # the zoo's tokenizer, loaded as screening loads it
    split = load_split(TARGET_TASK, split="heldout", data_dir=zoo, size=n)
    for name, shape in (("t5_small", T5_SMALL), ("t5_base", T5_BASE)):
        model = random_t5(shape, tokenizer_dir=tokenizer_dir, seed=1)
        # parameters() counts tied tensors once (T5's shared embedding is also encoder/decoder/lm_head)
        n_params = sum(p.numel() for p in model.parameters())
        per_ex = _per_example_s(model, tokenizer=tokenizer, split=split)
        extract, compose = _compose_s(model, k=4, work=work)
        out[name] = {
            "cpu_per_example_ms": round(per_ex * 1e3, 2),
            "extract_s": round(extract, 2),
            "compose4_s": round(compose, 3),
            "params_m": round(n_params / 1e6, 1),
            "paper_workload_cpu": project(
                per_example_s=per_ex, extract_s=extract, compose_s=compose, model_bytes=4 * n_params
            ),
        }
    base = out["t5_base"]
    out["base_over_small_per_example"] = round(
        base["cpu_per_example_ms"] / max(out["t5_small"]["cpu_per_example_ms"], 1e-9), 2
    )
    out["paper_workload_gpu"] = (
        None
        if gpu_rate is None
        else project(
            per_example_s=1.0 / gpu_rate,
            extract_s=base["extract_s"],
            compose_s=base["compose4_s"],
            model_bytes=int(base["params_m"] * 4e6),
        )
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    zoo = args.zoo or build(out=Path(".cache/zoo-tiny"), scale="tiny")
    tokenizer_dir = zoo / "hub" / "pico" / "t5-pico"
    work_parent = Path(tempfile.mkdtemp(prefix="bench-scale-")) if args.work is None else args.work
    world_root, work = work_parent / "world", work_parent / "work"
    try:
        t0 = time.perf_counter()
        world = build_world(
            world_root, tokenizer_dir=tokenizer_dir, n_finetunes=args.finetunes, reuse=args.keep
        )
        world_s = time.perf_counter() - t0
        work.mkdir(parents=True, exist_ok=True)
        stages, facts = _pipeline(world_root=world_root, zoo=zoo, work=work, max_cached=args.max_cached)
        costs = projections(
            zoo=zoo,
            tokenizer_dir=tokenizer_dir,
            work=work,
            n=args.cost_examples,
            gpu_rate=args.gpu_examples_per_s,
        )
    finally:
        if not args.keep:
            shutil.rmtree(work_parent, ignore_errors=True)
    _print(stages, costs)
    summary = {
        "world": {
            "repos": 1 + 1 + len(world.finetunes) + len(world.decoys),
            "finetunes": world.finetunes,
            "decoys": world.decoys,
            "gb": round(world.bytes_on_disk / GB, 2),
            "build_s": round(world_s, 1),
        },
        "stages": [asdict(s) for s in stages],
        **facts,
        "costs": costs,
        "threads": args.threads,
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine slows every stage
    }
    print(json.dumps(summary))
    return summary


def _print(stages: list[Stage], costs: dict) -> None:
    print(f"{'stage':8} {'wall s':>8} {'fetched MB':>11} {'peak RSS MB':>12} {'peak disk MB':>13}")
    for s in stages:
        print(
            f"{s.name:8} {s.seconds:8.1f} {s.bytes_fetched / 1e6:11.1f} {s.peak_rss_mb:12.1f} {s.peak_disk_mb:13.1f}"
        )
    for shape in ("t5_small", "t5_base"):
        c = costs[shape]
        w = c["paper_workload_cpu"]
        print(
            f"{shape}: {c['cpu_per_example_ms']} ms/example, extract {c['extract_s']} s, compose(4) "
            f"{c['compose4_s']} s -> paper workload on this CPU: screen {w['screen_h']} h + search "
            f"{w['search_h']} h = {w['total_h']} h ({w['download_gb']} GB to download)"
        )
    gpu = costs["paper_workload_gpu"]
    print(
        "GPU: " + ("no GPU figure (gpu_check.py did not run here)" if gpu is None else f"{gpu['total_h']} h")
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=None, help="a built pico zoo (data + tokenizer)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument("--finetunes", type=int, default=12, help="perturbed fine-tunes besides the target")
    parser.add_argument("--max-cached", type=int, default=2, help="screen's --max-cached (streaming)")
    parser.add_argument("--cost-examples", type=int, default=128, help="examples per cost measurement")
    parser.add_argument("--gpu-examples-per-s", type=float, default=None, help="t5-base rate from gpu_check")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    return parser


if __name__ == "__main__":
    main()
