"""`python -m benchmarks.demo`: parse options, run the demo, print its tables and a final JSON line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from benchmarks.demo.config import DESCRIPTION, DemoConfig
from benchmarks.demo.render import print_summary
from benchmarks.demo.run import run_demo
from registry.errors import TaskvecError
from search.tasks import GLUE_TASKS, SEARCH_SOURCES


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse options, run, print the table and a final JSON line."""
    args = _parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per model load drowns the demo's output
    # Two cores shared by the scorer and the sampler: more threads only contend.
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    try:
        summary = run_demo(_config(args))
    except TaskvecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_summary(summary, wall=time.perf_counter() - started)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=DESCRIPTION)
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="Folder for everything written.")
    parser.add_argument(
        "--zoo", type=Path, default=None, help="Zoo folder (default OUT/zoo; built if needed)."
    )
    parser.add_argument("--scale", default="full", choices=("full", "tiny"), help="Zoo scale if built.")
    parser.add_argument("--trials", type=int, default=DemoConfig.trials, help="Finished trials per study.")
    parser.add_argument("--top-k", type=int, default=DemoConfig.top_k, help="Candidates per search.")
    parser.add_argument("--tasks", default=",".join(GLUE_TASKS), help="Comma-separated GLUE tasks.")
    parser.add_argument("--search-size", type=int, default=None, help="Examples in each search split.")
    parser.add_argument(
        "--multi-trials",
        type=int,
        default=DemoConfig.multi_trials,
        help="Multi-task search trials (0 skips).",
    )
    parser.add_argument(
        "--multi-search-size",
        type=int,
        default=DemoConfig.multi_search_size,
        help="Examples in each task's search split for the multi-task search.",
    )
    parser.add_argument(
        "--multi-search-from",
        default=DemoConfig.multi_search_from,
        choices=SEARCH_SOURCES,
        help="Carve the multi-task search split from one half of validation (held-out: the other) or from train.",
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    return parser


def _config(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        out=args.out,
        zoo=args.zoo,
        scale=args.scale,
        trials=args.trials,
        top_k=args.top_k,
        search_size=args.search_size,
        multi_trials=args.multi_trials,
        multi_search_size=args.multi_search_size,
        multi_search_from=args.multi_search_from,
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
        progress=not args.quiet,
    )
