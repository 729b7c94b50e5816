"""Search benchmark on the pico zoo: pruning on vs off at one wall-clock budget, TPE vs random at equal trials.

    python -m benchmarks.bench_search [--zoo DIR] [--scale full|tiny] [--task sst2] [--budget 60] [--trials 30]

1. Pruning: two fresh studies on the same task, target, candidates and search split, one with successive
   halving over nested prefixes of the search split, one scoring every trial on the whole split, each
   given the same wall-clock budget. Reported: finished trials of each (complete + pruned) and their
   ratio, examples scored, the best search score and that trial's held-out score.
2. Samplers: two fresh studies without pruning, TPE (multivariate, grouped) and random search, each run
   to the same number of finished trials (per seed). Reported: best search score and its held-out score.

Both arms of each comparison run in this one process, one after the other, on the same machine. Every
file (database, Optuna storage, vector cache) lives under a scratch folder; the zoo is built there too
unless `--zoo` names one. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.zoo import build
from registry.constants import ENV_DB, ENV_HOME
from registry.errors import TaskvecError
from registry.sync import sync
from search.screen import screen
from search.study import SearchConfig, run_search

BASE_REPO = "pico/t5-pico"
DEFAULT_ZOO = Path(".cache/zoo-full")


def _arm(summary, *, seconds: float) -> dict[str, Any]:
    return {
        "finished": summary.n_finished,
        "complete": summary.n_complete,
        "pruned": summary.n_pruned,
        "examples_scored": summary.examples_scored,
        "best_search": summary.best_score_search,
        "best_heldout": summary.best_score_heldout,
        "target_search": summary.target_score_search,
        "target_heldout": summary.target_score_heldout,
        "seconds": round(seconds, 1),
    }


@dataclass(frozen=True)
class _Bench:
    """One benchmark's fixed setting: the task, target, candidates and where everything is written."""

    zoo: Path
    task: str
    top_k: int
    db_url: str
    storage: str
    progress: bool

    @property
    def target(self) -> str:
        return f"pico/t5-pico-{self.task}"

    def search(self, study: str, *, size: int | None, **kw: Any) -> tuple[Any, float]:
        """Run one fresh study; returns its summary and its wall seconds."""
        config = SearchConfig(
            task=self.task,
            target=self.target,
            data_dir=self.zoo,
            top_k=self.top_k,
            storage=self.storage,
            db_url=self.db_url,
            study_name=study,
            search_size=size,
            heldout_top_n=1,
            **kw,
        )
        started = time.perf_counter()
        summary = run_search(config, progress=self.progress)
        return summary, time.perf_counter() - started


def run_bench(
    *,
    zoo: Path,
    work: Path,
    task: str,
    budget_s: float,
    trials: int,
    top_k: int,
    search_size: int | None,
    pruning_search_size: int | None,
    seeds: tuple[int, ...],
    progress: bool,
) -> dict[str, Any]:
    """Run both comparisons and return the figures.

    Args:
        zoo: a built pico zoo.
        work: scratch folder (database, storage, vector cache).
        task: GLUE task searched.
        budget_s: wall-clock budget of each pruning arm.
        trials: finished trials of each sampler arm.
        top_k: candidates in each search.
        search_size: examples in the search split of the sampler arms (None: the data module's default).
        pruning_search_size: examples in the search split of the pruning arms (None: as `search_size`).
        seeds: sampler seeds of the TPE vs random comparison (each seed runs both samplers).
        progress: show progress bars.

    Returns:
        The JSON-ready figures.
    """
    bench = _Bench(
        zoo=zoo,
        task=task,
        top_k=top_k,
        db_url=f"sqlite:///{work / 'taskvec.db'}",
        storage=f"sqlite:///{work / 'optuna.db'}",
        progress=progress,
    )
    t0 = time.perf_counter()
    screened = _setup(bench, search_size=search_size, pruning_search_size=pruning_search_size)
    setup_s = time.perf_counter() - t0
    return {
        "bench": "search",
        "task": task,
        "zoo": str(zoo),
        "top_k": top_k,
        "candidates_screened": screened,
        "setup_s": round(setup_s, 1),
        "pruning": _pruning_arms(bench, budget_s=budget_s, size=pruning_search_size),
        "samplers": _sampler_arms(bench, trials=trials, seeds=seeds, size=search_size),
    }


def _setup(bench: _Bench, *, search_size: int | None, pruning_search_size: int | None) -> int:
    """Sync the registry and screen the candidates; returns the number screened."""
    sync(base=BASE_REPO, source=str(bench.zoo / "hub"), db_url=bench.db_url, progress=bench.progress)
    common = {"task": bench.task, "target": bench.target, "db_url": bench.db_url, "data_dir": bench.zoo}
    screened = screen(**common, search_size=search_size, progress=bench.progress)
    if pruning_search_size != search_size:  # screenings are per split: the pruning arms need their own
        screen(**common, search_size=pruning_search_size, progress=bench.progress)
    return len(screened)


def _pruning_arms(bench: _Bench, *, budget_s: float, size: int | None) -> dict[str, Any]:
    """Successive halving on vs off, each with the same wall-clock budget."""
    # A quota far above what the budget allows: the timeout is what stops both arms.
    quota = 100_000
    on, on_s = bench.search("bench-pruning-on", size=size, pruning=True, n_trials=quota, timeout_s=budget_s)
    off, off_s = bench.search(
        "bench-pruning-off", size=size, pruning=False, n_trials=quota, timeout_s=budget_s
    )
    return {
        "budget_s": budget_s,
        "search_size": size,
        "on": _arm(on, seconds=on_s),
        "off": _arm(off, seconds=off_s),
        "trials_ratio": round(on.n_finished / max(1, off.n_finished), 2),
        "examples_per_trial_on": round(on.examples_scored / max(1, on.n_finished), 1),
        "examples_per_trial_off": round(off.examples_scored / max(1, off.n_finished), 1),
    }


def _sampler_arms(bench: _Bench, *, trials: int, seeds: tuple[int, ...], size: int | None) -> dict[str, Any]:
    """TPE vs random search without pruning, the same number of finished trials per seed."""
    runs: dict[str, list[dict[str, Any]]] = {"tpe": [], "random": []}
    for seed in seeds:
        for name in runs:
            summary, secs = bench.search(
                f"bench-{name}-s{seed}", size=size, sampler=name, pruning=False, n_trials=trials, seed=seed
            )
            runs[name].append({"seed": seed, **_arm(summary, seconds=secs)})

    def mean(name: str, key: str) -> float | None:
        vals = [r[key] for r in runs[name] if r[key] is not None]
        return round(sum(vals) / len(vals), 2) if vals else None

    return {
        "trials": trials,
        "seeds": list(seeds),
        "runs": runs,
        "tpe_best_search_mean": mean("tpe", "best_search"),
        "random_best_search_mean": mean("random", "best_search"),
        "tpe_best_heldout_mean": mean("tpe", "best_heldout"),
        "random_best_heldout_mean": mean("random", "best_heldout"),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: build or reuse the zoo, run the benchmark, print a summary and one JSON line."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(1)  # one core per process on a shared 2-core machine; same for every arm
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_search-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_HOME] = str(work / "home")
    os.environ.pop(ENV_DB, None)
    started = time.perf_counter()
    try:
        t0 = time.perf_counter()
        zoo = build(out=args.zoo, scale=args.scale, progress=not args.quiet)
        zoo_s = time.perf_counter() - t0
        figures = run_bench(
            zoo=zoo,
            work=work,
            task=args.task,
            budget_s=args.budget,
            trials=args.trials,
            top_k=args.top_k,
            search_size=args.search_size,
            pruning_search_size=args.pruning_search_size,
            seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
            progress=not args.quiet,
        )
    except TaskvecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figures["scale"] = args.scale
    figures["zoo_s"] = round(zoo_s, 1)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    _print_figures(figures)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_search", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO, help="Zoo folder (built there if needed).")
    parser.add_argument("--scale", default="full", choices=("full", "tiny"), help="Zoo scale if built.")
    parser.add_argument("--task", default="sst2", help="GLUE task to search.")
    parser.add_argument("--budget", type=float, default=60.0, help="Seconds per pruning arm.")
    parser.add_argument("--trials", type=int, default=60, help="Finished trials per sampler arm.")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated sampler seeds (TPE vs random).")
    parser.add_argument("--top-k", type=int, default=6, help="Candidates per search.")
    parser.add_argument(
        "--search-size", type=int, default=None, help="Examples in the sampler arms' search split."
    )
    # Pruning saves scoring; at pico scale a trial's fixed cost (storage, sampling, composing) matches
    # scoring ~200 examples, so the pruning arms score a split large enough for scoring to dominate.
    parser.add_argument(
        "--pruning-search-size", type=int, default=1800, help="Examples in the pruning arms' search split."
    )
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a new temp dir).")
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    return parser


def _print_figures(figures: dict[str, Any]) -> None:
    """One line per comparison, then the figures as one JSON line."""
    p = figures["pruning"]
    print(
        f"\npruning on vs off, {p['budget_s']:.0f}s each: {p['on']['finished']} vs {p['off']['finished']} finished "
        f"trials (ratio {p['trials_ratio']}; {p['examples_per_trial_on']} vs {p['examples_per_trial_off']} "
        f"examples/trial); best search {p['on']['best_search']} vs {p['off']['best_search']}, "
        f"held-out {p['on']['best_heldout']} vs {p['off']['best_heldout']} (target {p['on']['target_search']:.2f} / "
        f"{p['on']['target_heldout']})"
    )
    s = figures["samplers"]
    print(
        f"TPE vs random, {s['trials']} trials, seeds {s['seeds']}: best search {s['tpe_best_search_mean']} vs "
        f"{s['random_best_search_mean']}, held-out {s['tpe_best_heldout_mean']} vs {s['random_best_heldout_mean']}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
