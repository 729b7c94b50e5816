"""Pruning where it pays: finished trials per wall time, nested-prefix pruning on vs off, at t5-small shape.

    python -m benchmarks.bench_pruning [--quick] [--seed 0]

A randomly initialised model of t5-small's real shape (d_model 512, 6+6 layers, 8 heads, d_ff 2048, vocab
32128) is the target; K random task vectors of t5-small's size (stored bf16, as the vector cache can) are
the candidates; the search split is 600 synthetic SST-2-style examples (the least that gets the default
three rungs: 67, 201, 600) tokenized by a word-level T5 tokenizer fitted to them. At this shape
scoring dominates a trial, as it does on real models, unlike the pico zoo where the fixed per-trial cost is
as large as scoring.

Both arms run the search's own trial (`search.study.objective.Objective`: compose in place with the
Composer, score nested prefixes with `NestedPrefixScorer`, report to the pruner of `make_pruner` with the
default `SearchConfig`: patient successive halving, rf 3, 3 rungs) in an in-memory Optuna study with the
search's TPE sampler, in this process, their trials interleaved (same background load):
- on: 60 trials, a study of that quota pruning as configured (its warm-up per rung follows the quota:
  4 trials; `--trials N` for another budget; `--quick`: 10 trials on a 200-example split, two rungs);
- off: every trial scores the whole split (3 trials; 1 with `--quick`: its cost per trial is constant).
Reported: finished trials per second of each arm and their ratio, pruned trials, examples scored, and the
share of wall time spent composing. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from transformers import T5Config, T5ForConditionalGeneration

from benchmarks.bench_scoring import T5_SMALL
from benchmarks.zoo.tokenizer import fit_vocab, make_tokenizer
from search.scoring.prefix import NestedPrefixScorer, prefix_sizes
from search.study.config import SearchConfig
from search.study.objective import Objective
from search.study.sampling import make_pruner, make_sampler
from search.tasks.data import Split
from search.tasks.glue import get_task
from search.vectors import Composer, TaskVector, model_parameters

TASK = "sst2"
N_EXAMPLES = 600  # the least for the default 3 rungs (first prefix >= MIN_PREFIX = 64 at rf 3)
N_EXAMPLES_QUICK = 200  # 2 rungs
N_VECTORS = 8
WORDS = 400
# Trials of the pruning arm, also its study's quota (which sets the pruner's warm-up per rung,
# `min_trials_per_rung`: 4 here). A night on a real model is hundreds of trials and `taskvec search` asks
# for 100 unless told; 60 keeps the default run a few minutes on two busy cores (`--trials` runs more).
N_TRIALS_ON = 60
N_TRIALS_QUICK = 10  # a 10-trial study waits for 8 trials per rung: at most 3 can stop (the 8th on)


def t5_small(*, seed: int) -> T5ForConditionalGeneration:
    """A t5-small-shaped T5 with N(0, 0.05) weights (allocated on the meta device: no slow default init)."""
    with torch.device("meta"):
        model = T5ForConditionalGeneration(T5Config(**T5_SMALL))
    model = model.to_empty(device="cpu")
    model.tie_weights()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05, generator=gen)
    return model.eval()


def synthetic_split(*, n: int, seed: int) -> tuple[Split, Any]:
    """`n` SST-2-style examples (6-14 words of 400, like SST-2 training phrases) and a tokenizer."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(WORDS)]
    sentences = [" ".join(rng.choice(words, size=int(rng.integers(6, 15)))) for _ in range(n)]
    spec = get_task(TASK)
    corpus = [*sentences, *spec.label_words.values(), f"{TASK} sentence:"]
    tokenizer = make_tokenizer(fit_vocab(corpus))
    labels = rng.permutation(np.arange(n) % 2)
    examples = pd.DataFrame({"sentence": sentences, "label": labels, "idx": np.arange(n)})
    digest = hashlib.sha256(f"bench-pruning:{n}:{seed}".encode()).hexdigest()
    return Split(task=TASK, name="search", examples=examples, fingerprint=digest), tokenizer


def random_vectors(model: torch.nn.Module, *, k: int, seed: int) -> list[TaskVector]:
    """K random bf16 vectors (N(0, 0.02): large enough to change predictions), each tensor's K rows one
    buffer (used in place by the composer)."""
    gen = torch.Generator().manual_seed(seed + 1)
    params = model_parameters(model)
    stacks = {
        name: torch.empty((k, p.numel()), dtype=torch.bfloat16).normal_(0.0, 0.02, generator=gen)
        for name, p in params.items()
    }
    return [
        TaskVector(
            {name: stacks[name][i].view(p.shape) for name, p in params.items()}, vector_id=f"random-{i}"
        )
        for i in range(k)
    ]


class _Timed:
    """Wraps the composer's `apply` to add up the wall time spent composing."""

    def __init__(self, composer: Composer) -> None:
        self.composer = composer
        self.seconds = 0.0

    def apply(self, coefficients: list[float]) -> None:
        start = time.perf_counter()
        self.composer.apply(coefficients)
        self.seconds += time.perf_counter() - start


class Arm:
    """One fresh study with the search's objective, sampler and pruner, run a trial at a time."""

    def __init__(
        self, *, model, tokenizer, split: Split, composer: Composer, pruning: bool, seed: int, n_trials: int
    ) -> None:
        config = SearchConfig(
            task=TASK, target="random-t5-small", pruning=pruning, seed=seed, n_trials=n_trials
        )
        self.sizes = prefix_sizes(
            len(split), rungs=config.prefix_rungs, reduction_factor=config.reduction_factor, pruning=pruning
        )
        self.timed = _Timed(composer)
        self.objective = Objective(
            composer=self.timed,  # type: ignore[arg-type]  (duck-typed: only `apply` is called)
            scorers={TASK: NestedPrefixScorer(model, tokenizer, split, sizes=self.sizes)},
            repos=[f"random-{i}" for i in range(composer.k)],
            lambda_max=config.lambda_max,
            n_trials=config.n_trials,
            pruning=pruning,
        )
        self.study = optuna.create_study(
            direction="maximize",
            sampler=make_sampler(config.sampler, seed=seed, n_params=composer.k),
            pruner=make_pruner(config, self.objective.steps),
        )
        self.seconds = 0.0

    def step(self) -> None:
        """Run one more trial, adding its wall time to the arm's."""
        start = time.perf_counter()
        self.study.optimize(self.objective, n_trials=1)
        self.seconds += time.perf_counter() - start

    def summary(self) -> dict[str, Any]:
        trials = self.study.get_trials(deepcopy=False)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
        finished = sum(
            t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials
        )
        examples = sum(int(t.user_attrs.get("examples_scored", 0)) for t in trials)
        return {
            "trials": finished,
            "pruned": pruned,
            "rungs": self.sizes,
            "examples_scored": examples,
            "seconds": round(self.seconds, 2),
            "trials_per_s": finished / self.seconds,
            "min_trials_per_rung": getattr(self.study.pruner, "min_trials", None),
            "compose_share": round(self.timed.seconds / self.seconds, 3),
            "best": self.study.best_value,
        }


def pruning_bench(*, quick: bool = False, seed: int = 0, n_trials: int | None = None) -> dict:
    """Finished trials per wall time with pruning on vs off at t5-small shape (see the module docstring).

    The arms' trials are interleaved (one trial without pruning after every n_on / n_off with it), so both
    see the same background load on a shared machine.

    Args:
        quick: a smoke run (200 examples, two rungs, 10 trials vs 1).
        seed: seeds the model, split, vectors and samplers.
        n_trials: trials of the pruning arm, its study's quota (default N_TRIALS_ON; quick: 10).

    Returns:
        `ratio` (trials per second, on / off), `examples_ratio` (examples per trial, off / on: the same
        comparison without wall time), each arm's figures (`on`, `off`), and the setting.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    model = t5_small(seed=seed)
    split, tokenizer = synthetic_split(n=N_EXAMPLES_QUICK if quick else N_EXAMPLES, seed=seed)
    composer = Composer(
        model, target=model_parameters(model), vectors=random_vectors(model, k=N_VECTORS, seed=seed)
    )
    n_on = n_trials or (N_TRIALS_QUICK if quick else N_TRIALS_ON)
    n_off = 1 if quick else 3
    kwargs = dict(model=model, tokenizer=tokenizer, split=split, composer=composer, seed=seed)
    on, off = Arm(**kwargs, pruning=True, n_trials=n_on), Arm(**kwargs, pruning=False, n_trials=n_off)
    every = n_on // n_off
    for i in range(n_on):
        on.step()
        if i % every == every // 2:
            off.step()
            print(f"bench_pruning: {i + 1}/{n_on} trials with pruning", file=sys.stderr, flush=True)
    arms = {"on": on.summary(), "off": off.summary()}
    ratio = arms["on"]["trials_per_s"] / arms["off"]["trials_per_s"]
    per_trial = {k: a["examples_scored"] / a["trials"] for k, a in arms.items()}
    return {
        "bench": "pruning",
        "shape": "t5-small",
        "task": TASK,
        "examples": len(split),
        "vectors": N_VECTORS,
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
        "seed": seed,
        "trials_on": n_on,
        "ratio": round(ratio, 3),
        "examples_ratio": round(per_trial["off"] / per_trial["on"], 3),
        "on": arms["on"],
        "off": arms["off"],
    }


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry: print the arms and the ratio; the last line is one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (200 examples, 10 trials vs 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trials", type=int, default=None, help=f"trials with pruning (default {N_TRIALS_ON}; quick 10)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = pruning_bench(quick=args.quick, seed=args.seed, n_trials=args.trials)
    for name in ("off", "on"):
        arm = result[name]
        print(
            f"pruning {name}: {arm['trials']} trials ({arm['pruned']} pruned) in {arm['seconds']} s, "
            f"{arm['trials_per_s']:.3f} trials/s, rungs {arm['rungs']}, composing {arm['compose_share']:.0%}"
        )
    print(f"finished trials per wall time, pruning on / off: {result['ratio']:.2f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
