"""Racing screens and coarse-to-fine lambda search against the full grid, on the pico zoo.

Measured side by side in one run, on one table of exact scores: every (candidate, lambda) needed is
scored once on the whole search split, and each screening strategy is replayed over that table with the
product's own code (`search.screen.grid`, `search.screen.racing`: the same lambda searches, the same
chunk cache, the same elimination rules for candidates and for each survivor's lambdas), counting the
examples it would have scored. A race costs a (candidate, lambda) only the chunks of the prefixes it
reached, exactly as `ChunkCache` does in a screen. Racing is reported with the grid's lambdas and with
coarse-to-fine (the shipped default), and, for comparison, the race before lambdas raced too.

The pool (per task, its target's candidates): the zoo's fine-tunes compatible with the base (the target
excluded), plus cheap in-memory variants of their task vectors: each one with Gaussian noise of half its
tensors' standard deviation (`~noise`), negated (`~neg`), halved (`~half`), and the means of consecutive
pairs (`a+b`) until the pool holds `pool` candidates. The search split is carved from GLUE train
(`--search-size`, default 400 of the zoo's 2000 rows; the product's default for the zoo is 200), the
grid is the product's `DEFAULT_LAMBDAS`, the harm margin its `HARM_MARGIN`.

The default run covers all four GLUE tasks (about 12 minutes on two loaded cores: the tables are the
cost). Figures are per task, and pooled over the tasks run (sums of examples; recall and score differences
averaged over tasks / candidates).

    python -m benchmarks.screen_eval racing [--quick] [--tasks mrpc,sst2] [--zoo DIR]
    python -m benchmarks.screen_eval c2f [--quick]

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.zoo import full_zoo
from benchmarks.zoo.manifest import load_manifest
from search.scoring import Scorer, load_seq2seq
from search.scoring.scorer import ScoreResult
from search.screen.chunks import ChunkCache, prefix_of, slice_result
from search.screen.grid import (
    COARSE_POINTS,
    REFINE_LEVELS,
    Arms,
    coarse_to_fine,
    round_search,
    search_lambdas,
)
from search.screen.racing import RACE_KEEP, RaceRule, race, race_sizes
from search.screen.run import DEFAULT_LAMBDAS, HARM_MARGIN
from search.tasks import load_split
from search.vectors import Composer, TaskVector

TOP = 8
POOL = 112
SEARCH_SIZE = 400
TASKS = ("mrpc", "rte", "cola", "sst2")
QUICK = {"pool": 30, "search_size": 200, "tasks": ("mrpc",)}
# Lambda searches (coarse points, refinement levels) measured against the grid: the shipped default first
C2F_VARIANTS = {
    "default": (COARSE_POINTS, REFINE_LEVELS),
    "points2_levels1": (2, 1),
    "points2_levels2": (2, 2),
}


@dataclass
class Table:
    """Exact full-split results of one task's pool, scored on demand, each (candidate, lambda) once."""

    task: str
    scorer: Scorer
    target: ScoreResult
    composers: dict[str, Composer]
    results: dict[tuple[str, float], ScoreResult] = field(default_factory=dict)

    def result(self, cand: str, lam: float) -> ScoreResult:
        key = (cand, float(lam))
        if key not in self.results:
            self.composers[cand].apply([float(lam)])
            self.results[key] = self.scorer.score()
        return self.results[key]


def _pool_vectors(zoo: Path, task: str, *, size: int) -> dict[str, TaskVector]:
    manifest = load_manifest(zoo)
    hub, base = zoo / "hub", zoo / "hub" / manifest["base"]
    target = manifest["targets"][task]
    repos = sorted(
        r
        for r, e in manifest["repos"].items()
        if e.get("expected_status") == "compatible" and e.get("role") != "base" and r != target
    )
    real = {r: TaskVector.from_checkpoints(base=base, finetuned=hub / r, vector_id=r) for r in repos}
    pool = dict(real)
    rng = torch.Generator().manual_seed(0)
    for r, tau in real.items():
        noisy = {
            k: v + 0.5 * v.float().std() * torch.randn(v.shape, generator=rng) for k, v in tau.deltas.items()
        }
        pool[f"{r}~noise"] = TaskVector(noisy, vector_id=f"{r}~noise")
        pool[f"{r}~neg"] = -tau
        pool[f"{r}~half"] = tau * 0.5
    names = list(real)
    k = 0
    while len(pool) < size and len(names) > 1:
        a, b = names[k % len(names)], names[(k + 1 + k // len(names)) % len(names)]
        if a != b and f"{a}+{b}" not in pool:
            pool[f"{a}+{b}"] = (real[a] + real[b]) * 0.5
        k += 1
    return dict(list(pool.items())[:size])


def _table(zoo: Path, task: str, *, pool: int, search_size: int) -> Table:
    manifest = load_manifest(zoo)
    target_dir = zoo / "hub" / manifest["targets"][task]
    model, tok = load_seq2seq(target_dir)
    split = load_split(task, split="search", data_dir=zoo / "glue", size=search_size)
    scorer = Scorer(model, tok, split)
    target = scorer.score()
    vectors = _pool_vectors(zoo, task, size=pool)
    composers = {c: Composer(model, target=target_dir, vectors=[v]) for c, v in vectors.items()}
    return Table(task=task, scorer=scorer, target=target, composers=composers)


_TABLES: dict[tuple[str, str, int, int], Table] = {}


def table_for(zoo: Path, task: str, *, pool: int, search_size: int) -> Table:
    """One task's table, shared by both benchmarks in one process (the costly part is scoring it)."""
    key = (str(zoo), task, pool, search_size)
    if key not in _TABLES:
        _TABLES[key] = _table(zoo, task, pool=pool, search_size=search_size)
    return _TABLES[key]


def _screen_all(table: Table, how: str) -> tuple[dict[str, float], int]:
    """Every candidate's best score on the whole split under a lambda search, and the examples it cost."""
    best, examples = {}, 0
    for cand in table.composers:
        tried = search_lambdas(
            lambda lam, c=cand: table.result(c, lam),
            how=how,
            lambdas=DEFAULT_LAMBDAS,
            target_score=table.target.score,
            harm_margin=HARM_MARGIN,
        )
        best[cand] = max(t["score"] for t in tried)
        examples += sum(t["n"] for t in tried)
    return best, examples


def _race(table: Table, how: str, *, keep: int, lambdas: bool = True) -> tuple[dict[str, float], int, int]:
    """A racing screen replayed on the table (`lambdas`: race each survivor's lambdas too, as `screen`
    does): full-split survivors' best scores, examples, survivors."""
    sizes = race_sizes(len(table.scorer.split))
    cache: ChunkCache[str] = ChunkCache(sizes)

    def screen_one(cand: str, r: int, arms: Arms | None) -> list[dict[str, Any]]:
        def evaluate(lam: float) -> ScoreResult:
            full = table.result(cand, lam)
            return cache.result(
                cand,
                lam,
                upto=r,
                compute=lambda k: slice_result(full, 0 if k == 0 else sizes[k - 1], sizes[k]),
            )

        return round_search(
            evaluate,
            how=how,
            lambdas=DEFAULT_LAMBDAS,
            harm_margin=HARM_MARGIN,
            arms=arms,
            target_score=prefix_of(table.target, sizes[r]).score,
        )

    rule = RaceRule(keep=keep, lambdas=lambdas)
    final = race(list(table.composers), task=table.task, sizes=sizes, screen_one=screen_one, rule=rule)
    full = {s.candidate: s.best["score"] for s in final if s.n == sizes[-1]}
    return full, cache.examples_scored, len(full)


def _top(scores: dict[str, float], k: int) -> list[str]:
    return sorted(scores, key=lambda c: (-scores[c], c))[:k]


def _recall(reference: dict[str, float], found: dict[str, float], k: int = TOP) -> float:
    """Share of the reference's top k that `found`'s top k holds (a tie at the k-th score counts as held)."""
    want = _top(reference, k)
    cut = reference[want[-1]]
    got = set(_top(found, k))
    hits = sum(1 for c in want if c in got or (reference[c] == cut and any(reference[g] == cut for g in got)))
    return hits / len(want)


def _setup(quick: bool, tasks: Sequence[str] | None, pool: int | None, search_size: int | None) -> dict:
    base = QUICK if quick else {"pool": POOL, "search_size": SEARCH_SIZE, "tasks": TASKS}
    return {
        "pool": pool or base["pool"],
        "search_size": search_size or base["search_size"],
        "tasks": tuple(tasks or base["tasks"]),
    }


def racing_bench(
    *,
    zoo: Path,
    quick: bool = False,
    tasks: Sequence[str] | None = None,
    pool: int | None = None,
    search_size: int | None = None,
    keep: int = RACE_KEEP,
) -> dict:
    """Racing vs the full grid (both with the grid's lambdas, and racing with coarse-to-fine too).

    Returns:
        `{"per_task": {task: {...}}, "pooled": {...}, "setup": {...}}`: examples scored by the full grid
        and by racing, their ratio, recall of the full grid's top 8, candidates reaching the full split.
    """
    setup = _setup(quick, tasks, pool, search_size)
    torch.set_num_threads(1)  # two threads on two loaded cores run slower than one
    per_task, started = {}, time.perf_counter()
    for task in setup["tasks"]:
        table = table_for(zoo, task, pool=setup["pool"], search_size=setup["search_size"])
        grid_best, grid_examples = _screen_all(table, "grid")
        c2f_best, c2f_full_examples = _screen_all(table, "coarse-to-fine")
        raced, race_examples, survivors = _race(table, "grid", keep=keep)
        raced_c2f, c2f_examples, _ = _race(table, "coarse-to-fine", keep=keep)
        # Before lambdas raced too: every lambda a candidate tried stayed in its later rounds
        raced_old, old_examples, _ = _race(table, "coarse-to-fine", keep=keep, lambdas=False)
        per_task[task] = {
            "candidates": len(table.composers),
            "search_size": len(table.scorer.split),
            "grid_examples": grid_examples,
            "racing_examples": race_examples,
            "ratio": grid_examples / race_examples,
            "top8_recall": _recall(grid_best, raced),
            "full_split_survivors": survivors,
            "racing_c2f_examples": c2f_examples,
            "racing_c2f_ratio": grid_examples / c2f_examples,
            "racing_c2f_top8_recall": _recall(grid_best, raced_c2f),
            "racing_c2f_candidates_only_ratio": grid_examples / old_examples,
            "racing_c2f_candidates_only_top8_recall": _recall(grid_best, raced_old),
            "c2f_full_split_examples": c2f_full_examples,
            "racing_c2f_vs_c2f_ratio": c2f_full_examples / c2f_examples,
            "racing_c2f_vs_c2f_top8_recall": _recall(c2f_best, raced_c2f),
        }
        print(f"racing {task}: {json.dumps(per_task[task])}", file=sys.stderr, flush=True)
    rows = per_task.values()
    grid_total = sum(r["grid_examples"] for r in rows)
    pooled = {
        "grid_examples": grid_total,
        "racing_examples": sum(r["racing_examples"] for r in rows),
        "ratio": grid_total / sum(r["racing_examples"] for r in rows),
        "top8_recall": float(np.mean([r["top8_recall"] for r in rows])),
        "racing_c2f_ratio": grid_total / sum(r["racing_c2f_examples"] for r in rows),
        "racing_c2f_top8_recall": float(np.mean([r["racing_c2f_top8_recall"] for r in rows])),
        "racing_c2f_vs_c2f_ratio": sum(r["c2f_full_split_examples"] for r in rows)
        / sum(r["racing_c2f_examples"] for r in rows),
        "racing_c2f_vs_c2f_top8_recall": float(np.mean([r["racing_c2f_vs_c2f_top8_recall"] for r in rows])),
    }
    pooled["must_show"] = pooled["ratio"] >= 4 and pooled["top8_recall"] >= 0.9
    for r in rows:
        r["must_show_racing_c2f"] = r["racing_c2f_ratio"] >= 4 and r["racing_c2f_top8_recall"] >= 0.9
    # The shipped default screens with both: racing over coarse-to-fine lambdas, against the full grid.
    pooled["must_show_racing_c2f"] = (
        pooled["racing_c2f_ratio"] >= 4 and pooled["racing_c2f_top8_recall"] >= 0.9
    )
    pooled["must_show_racing_c2f_every_task"] = all(r["must_show_racing_c2f"] for r in rows)
    return {
        "per_task": per_task,
        "pooled": pooled,
        "setup": {
            **setup,
            "keep": keep,
            "zoo": str(zoo),
            "pool_how": "zoo fine-tunes + ~noise (0.5 std Gaussian), ~neg, ~half, and pair means",
            "seconds": time.perf_counter() - started,
        },
    }


def _c2f_level(
    table: Table, grid_best: dict[str, float], grid_examples: int, *, points: int, levels: int
) -> dict:
    """Coarse-to-fine with `points` coarse points and `levels` refinements against the grid on one task."""
    best, examples = {}, 0
    for cand in table.composers:
        tried = coarse_to_fine(
            lambda lam, c=cand: table.result(c, lam),
            lambdas=DEFAULT_LAMBDAS,
            target_score=table.target.score,
            harm_margin=HARM_MARGIN,
            points=points,
            levels=levels,
        )
        best[cand] = max(t["score"] for t in tried)
        examples += sum(t["n"] for t in tried)
    diffs = np.array([best[c] - grid_best[c] for c in grid_best])
    top = _top(grid_best, TOP)
    return {
        "examples": examples,
        "ratio": grid_examples / examples,
        "best_score_diff_mean": float(diffs.mean()),
        "best_score_diff_min": float(diffs.min()),
        "best_score_diff_top8_mean": float(np.mean([best[c] - grid_best[c] for c in top])),
        "must_show": grid_examples / examples >= 2 and float(diffs.mean()) >= -0.5,
        "diffs": diffs.tolist(),
        "top8_diffs": [best[c] - grid_best[c] for c in top],
    }


def coarse_to_fine_bench(
    *,
    zoo: Path,
    quick: bool = False,
    tasks: Sequence[str] | None = None,
    pool: int | None = None,
    search_size: int | None = None,
    variants: Mapping[str, tuple[int, int]] = C2F_VARIANTS,
) -> dict:
    """Coarse-to-fine lambda search vs the whole grid, every candidate on the whole split.

    Returns:
        `{"per_task": ..., "pooled": ..., "setup": ...}`: examples scored, their ratio, and the best-lambda
        score difference (coarse-to-fine minus grid; mean, worst and top-8 mean over candidates), per
        variant (name -> (coarse points, refinement levels); "default" is the shipped one).
    """
    setup = _setup(quick, tasks, pool, search_size)
    torch.set_num_threads(1)
    per_task, started = {}, time.perf_counter()
    for task in setup["tasks"]:
        table = table_for(zoo, task, pool=setup["pool"], search_size=setup["search_size"])
        grid_best, grid_examples = _screen_all(table, "grid")
        out: dict[str, Any] = {"candidates": len(table.composers), "grid_examples": grid_examples}
        for name, (points, lv) in variants.items():
            out[name] = _c2f_level(table, grid_best, grid_examples, points=points, levels=lv)
        per_task[task] = out
        print(f"c2f {task}: {json.dumps({k: v for k, v in out.items()})[:400]}", file=sys.stderr, flush=True)
    pooled = {}
    for name, (points, lv) in variants.items():
        grid_total = sum(r["grid_examples"] for r in per_task.values())
        ex = sum(r[name]["examples"] for r in per_task.values())
        diffs = np.concatenate([r[name]["diffs"] for r in per_task.values()])
        pooled[name] = {
            "points": points,
            "levels": lv,
            "grid_examples": grid_total,
            "examples": ex,
            "ratio": grid_total / ex,
            "best_score_diff_mean": float(diffs.mean()),
            "best_score_diff_min": float(diffs.min()),
            "best_score_diff_top8_mean": float(
                np.mean([d for r in per_task.values() for d in r[name]["top8_diffs"]])
            ),
            "must_show": grid_total / ex >= 2 and float(diffs.mean()) >= -0.5,
            "must_show_every_task": all(r[name]["must_show"] for r in per_task.values()),
        }
    for r in per_task.values():
        for name in variants:
            r[name].pop("diffs")
            r[name].pop("top8_diffs")
    return {
        "per_task": per_task,
        "pooled": pooled,
        "setup": {**setup, "zoo": str(zoo), "seconds": time.perf_counter() - started},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.screen_eval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("which", choices=("racing", "c2f", "both"))
    parser.add_argument("--zoo", type=Path, default=None, help="a built zoo (default: the seed-0 full zoo)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", default=None, help="Comma-separated tasks (default: all four).")
    parser.add_argument("--pool", type=int, default=None)
    parser.add_argument("--search-size", type=int, default=None)
    args = parser.parse_args(argv)
    kw = {
        "zoo": full_zoo(args.zoo),
        "quick": args.quick,
        "tasks": args.tasks.split(",") if args.tasks else None,
        "pool": args.pool,
        "search_size": args.search_size,
    }
    out = {}
    if args.which in ("racing", "both"):
        out["racing"] = racing_bench(**kw)
    if args.which in ("c2f", "both"):
        out["coarse_to_fine"] = coarse_to_fine_bench(**kw)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
