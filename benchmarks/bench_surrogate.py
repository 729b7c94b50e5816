"""More compositions per exact evaluation: racing, coarse-to-fine lambda, pruning and the surrogate, each
against the way it is done without it, side by side in one run.

Sections (issue 13's benchmark), each a function of its own module:
  (a) racing screens vs the full grid, on a pool of >= 100 candidates (`benchmarks/screen_eval.py`):
      examples scored, their ratio, recall of the full grid's top 8;
  (b) coarse-to-fine lambda vs the full grid (`screen_eval.py`): examples scored, ratio, best-lambda score
      difference;
  (c) nested-prefix pruning on vs off at t5-small shape (`benchmarks/bench_pruning.py`): finished trials per
      wall time;
  (d) the surrogate's Spearman rho and mean absolute error against exact scores over random compositions,
      additive alone and corrected after 10, 20 and 40 exact trials (`benchmarks/surrogate_eval.py`);
  (e) exact example-forwards until the best-so-far comes within 0.5 points of a long reference run's best,
      surrogate on vs off, median over 3 seeds, and each arm's best held-out score (`surrogate_eval.py`).

Usage: python -m benchmarks.bench_surrogate [--zoo DIR] [--quick] [--only a,b,c,d,e]
The zoo defaults to the seed-0 full zoo `make demo` builds (built here when missing).
Last line of output: one JSON object with every section's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_pruning import pruning_bench
from benchmarks.screen_eval import coarse_to_fine_bench, racing_bench
from benchmarks.surrogate_eval import surrogate_accuracy_bench, surrogate_search_bench, torch_threads
from benchmarks.zoo import full_zoo

SECTIONS = ("a", "b", "c", "d", "e")


def run_sections(*, zoo: Path, quick: bool, only: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    """Run the chosen sections; each section's figures under its letter, with its wall time."""
    calls = {
        "a": lambda: racing_bench(zoo=zoo, quick=quick),
        "b": lambda: coarse_to_fine_bench(zoo=zoo, quick=quick),
        "c": lambda: pruning_bench(quick=quick),
        "d": lambda: surrogate_accuracy_bench(zoo=zoo, quick=quick),
        "e": lambda: surrogate_search_bench(zoo=zoo, quick=quick),
    }
    out: dict[str, Any] = {}
    for key in only:
        started = time.perf_counter()
        print(f"bench_surrogate: section ({key}) ...", file=sys.stderr, flush=True)
        out[key] = calls[key]()
        out[key]["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=None, help="a built full zoo (default: build seed 0)")
    parser.add_argument("--quick", action="store_true", help="smoke test: smaller pools, fewer trials")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run, e.g. a,b")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {','.join(SECTIONS)}")
    torch_threads()
    zoo = full_zoo(args.zoo)
    out = run_sections(zoo=zoo, quick=args.quick, only=only)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
