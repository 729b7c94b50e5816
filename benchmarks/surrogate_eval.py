"""The surrogate, honestly evaluated on the pico zoo (issue 13, benchmark sections 5(d) and 5(e)).

    python -m benchmarks.surrogate_eval [--zoo DIR] [--quick] [--only accuracy|search]
                                        [--tasks mrpc,rte,cola,sst2]

Setting (both sections): per task, the zoo's target screened over the default lambda grid (a fresh
database in a scratch folder; the zoo is only read), the search's candidates its top `TOP_K` screened by
gain, compositions scored directly with the Composer and Scorer on the search split.

(d) `surrogate_accuracy_bench`: `N_TEST` random compositions (each candidate in with probability 1/2, its
    lambda uniform in [0, 1]) scored exactly; Spearman's rho and the mean absolute error of the additive
    prediction, and of the corrected one after its residual GP saw 10, 20 and 40 exact trials of another
    random set.
(e) `surrogate_search_bench`: Optuna studies (TPE as `taskvec search` configures it, the screening warm
    start first, no pruning), surrogate-assisted vs not, `SEEDS` seeds each, `BUDGET` trials; a long
    TPE run of `REFERENCE` trials gives the reference best. Reported per task: exact example-forwards until
    the best-so-far comes within 0.5 points of the reference best (median over seeds; a seed that never
    gets there counts its whole budget, marked censored), their ratio off / on, and each arm's median
    held-out score of its best trial. Screening's own forwards are the same for both arms, so not counted.
    MRPC only by default (a few minutes); `--tasks` runs others.

The last line printed is one JSON object with both sections.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from scipy.stats import spearmanr

from benchmarks.zoo import full_zoo, load_manifest
from registry.constants import ENV_DB, ENV_HOME
from registry.pins import compatible_candidates, located, resolve_target
from registry.sync import sync
from search.scoring.models import load_seq2seq
from search.scoring.scorer import Scorer
from search.screen import screen
from search.study.sampling import make_sampler
from search.study.space import lambda_param, use_param, warm_start_params
from search.study.surrogate import Grid, Surrogate, SurrogateProposer, load_grid
from search.tasks.data import load_split
from search.vectors.compose import open_composer

BASE_REPO = "pico/t5-pico"
TASKS = ("mrpc", "rte", "cola", "sst2")
TOP_K = 8
LAMBDA_MAX = 1.5
N_TEST, N_TRAIN, FITS = 100, 40, (10, 20, 40)
SEEDS, BUDGET, REFERENCE, WITHIN = (0, 1, 2), 60, 120, 0.5
SEARCH_TASKS = TASKS  # (e) takes about 40 s a task on the pico zoo


@dataclass
class TaskWorld:
    """One task's fixed setting: the live model composed in place, its scorers and the screening grid."""

    task: str
    repos: list[str]
    screened: list[dict[str, Any]]
    grid: Grid
    apply: Callable[[list[float]], None]
    search: Scorer
    heldout: Scorer

    def exact(self, coefs: list[float], *, heldout: bool = False) -> float:
        self.apply(list(coefs))
        return float((self.heldout if heldout else self.search).score().score)


_WORLDS: dict[tuple[str, str], TaskWorld] = {}
_DBS: dict[str, str] = {}


def world(task: str, *, zoo: Path) -> TaskWorld:
    """The task's world, built once per process (both sections share one screening)."""
    key = (str(zoo.resolve()), task)
    if key not in _WORLDS:
        if key[0] not in _DBS:
            work = Path(tempfile.mkdtemp(prefix="surrogate-eval-"))
            atexit.register(shutil.rmtree, work, True)
            _DBS[key[0]] = prepare(zoo, work)
        _WORLDS[key] = open_task(task, zoo=zoo, db_url=_DBS[key[0]])
    return _WORLDS[key]


def prepare(zoo: Path, work: Path) -> str:
    """A fresh database under `work` with the zoo synced; returns its URL."""
    os.environ[ENV_HOME] = str(work / "home")
    os.environ.pop(ENV_DB, None)
    db_url = f"sqlite:///{work / 'taskvec.db'}"
    sync(base=BASE_REPO, source=str(zoo / "hub"), db_url=db_url, progress=False)
    return db_url


def open_task(task: str, *, zoo: Path, db_url: str, top_k: int = TOP_K) -> TaskWorld:
    """Screen the task's target (stored log-probs included) and open its top-k candidates' composer."""
    target = f"pico/t5-pico-{task}"
    rows = screen(
        task=task,
        target=target,
        exclude=tuple(load_manifest(zoo).get("multitask", {}).values()),
        db_url=db_url,
        data_dir=zoo,
        progress=False,
    )[:top_k]
    resolved = resolve_target(target, db_url=db_url)
    by_repo = {c.repo_id: c for c in compatible_candidates(resolved, db_url=db_url)}
    model, tokenizer = load_seq2seq(resolved.target.path)
    composer = open_composer(
        model,
        target=resolved.target.path,
        base=resolved.base,
        ingredients=[located(by_repo[r["candidate_repo"]]) for r in rows],
    )
    split = load_split(task, split="search", data_dir=zoo)
    grid = load_grid(
        task=task,
        target_revision=resolved.target.revision,
        split_fingerprint=split.fingerprint,
        candidate_revisions=[r["candidate_revision"] for r in rows],
        labels=split.examples["label"].to_numpy(),
        db_url=db_url,
    )
    assert grid is not None, "screening stored no log-probs"
    return TaskWorld(
        task=task,
        repos=[r["candidate_repo"] for r in rows],
        screened=rows,
        grid=grid,
        apply=composer.apply,
        search=Scorer(model, tokenizer, split),
        heldout=Scorer(model, tokenizer, load_split(task, split="heldout", data_dir=zoo)),
    )


def random_compositions(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    return np.where(rng.random((n, m)) < 0.5, rng.uniform(0.0, 1.0, (n, m)), 0.0)


def _agreement(pred: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    rho = spearmanr(pred, exact).statistic
    return {"rho": round(float(np.nan_to_num(rho)), 3), "mae": round(float(np.abs(pred - exact).mean()), 2)}


def accuracy_for(world: TaskWorld, *, n_test: int, n_train: int, fits: tuple[int, ...]) -> dict[str, Any]:
    """Section (d) on one task."""
    rng = np.random.default_rng(0)
    m = len(world.repos)
    test = random_compositions(rng, n_test, m)
    train = random_compositions(rng, n_train, m)
    exact_test = np.array([world.exact(list(c)) for c in test])
    exact_train = np.array([world.exact(list(c)) for c in train])
    surrogate = Surrogate(grid=world.grid, lambda_max=LAMBDA_MAX)
    out: dict[str, Any] = {"n_test": n_test, "exact_spread": round(float(exact_test.std()), 2)}
    out["additive"] = _agreement(world.grid.additive_scores(test), exact_test)
    for n in fits:
        surrogate.fit(train[:n], exact_train[:n])
        out[f"corrected_{n}"] = _agreement(surrogate.predict(test)[0], exact_test)
    return out


def surrogate_accuracy_bench(*, zoo: Path, quick: bool = False) -> dict:
    """(d): the surrogate's Spearman rho and MAE against exact search-split scores, per task."""
    n_test, n_train, fits = (30, 20, (10, 20)) if quick else (N_TEST, N_TRAIN, FITS)
    tasks = TASKS[:2] if quick else TASKS
    out = {}
    for task in tasks:
        t0 = time.perf_counter()
        out[task] = accuracy_for(world(task, zoo=zoo), n_test=n_test, n_train=n_train, fits=fits)
        _say(f"(d) {task}: {out[task]} ({time.perf_counter() - t0:.0f} s)")
    return {"top_k": TOP_K, "compositions": "each candidate in w.p. 1/2, lambda ~ U[0, 1]", "tasks": out}


def run_study(
    world: TaskWorld, *, seed: int, budget: int, surrogate: bool
) -> list[tuple[float, list[float]]]:
    """One study of `budget` trials (warm start first); each trial's (exact search score, coefficients)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    repos = world.repos
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler("tpe", seed=seed, n_params=len(repos))
    )
    for params in warm_start_params(world.screened, lambda_max=LAMBDA_MAX):
        study.enqueue_trial(params)
    proposer = (
        SurrogateProposer(grid=world.grid, repos=repos, lambda_max=LAMBDA_MAX, seed=seed)
        if surrogate
        else None
    )
    trials: list[tuple[float, list[float]]] = []

    def objective(trial: optuna.Trial) -> float:
        coefs = []
        for repo in repos:
            use = trial.suggest_categorical(use_param(repo), [False, True])
            coefs.append(trial.suggest_float(lambda_param(repo), 0.0, LAMBDA_MAX) if use else 0.0)
        score = world.exact(coefs)
        trials.append((score, coefs))
        return score

    for _ in range(budget):
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if proposer is not None and not waiting:
            proposer.enqueue(study)
        study.optimize(objective, n_trials=1)
    return trials


def _forwards_to(trials: list[tuple[float, list[float]]], *, goal: float, n: int) -> tuple[int, bool]:
    """Example-forwards until the best-so-far reaches `goal` (all of them, censored, when never)."""
    best = -np.inf
    for k, (score, _) in enumerate(trials):
        best = max(best, score)
        if best >= goal:
            return (k + 1) * n, False
    return len(trials) * n, True


def search_for(world: TaskWorld, *, seeds: tuple[int, ...], budget: int, reference: int) -> dict[str, Any]:
    """Section (e) on one task."""
    n = len(world.search.split)
    ref = max(s for s, _ in run_study(world, seed=1000, budget=reference, surrogate=False))
    goal = ref - WITHIN
    out: dict[str, Any] = {"reference_best": round(ref, 2), "reference_trials": reference, "budget": budget}
    for arm, on in (("off", False), ("on", True)):
        forwards, censored, heldout, best = [], [], [], []
        for seed in seeds:
            trials = run_study(world, seed=seed, budget=budget, surrogate=on)
            f, c = _forwards_to(trials, goal=goal, n=n)
            forwards.append(f)
            censored.append(c)
            top = max(trials, key=lambda t: t[0])
            best.append(top[0])
            heldout.append(world.exact(top[1], heldout=True))
        out[arm] = {
            "forwards": forwards,
            "censored": censored,
            "median_forwards": float(np.median(forwards)),
            "best_search": [round(b, 2) for b in best],
            "median_best_heldout": round(float(np.median(heldout)), 2),
        }
    out["ratio"] = round(out["off"]["median_forwards"] / out["on"]["median_forwards"], 2)
    # When the plain arm's median seed never got there, its forwards are its budget: the ratio is a floor.
    off = sorted(zip(out["off"]["forwards"], out["off"]["censored"], strict=True))
    out["ratio_is_lower_bound"] = bool(off[len(off) // 2][1])
    return out


def surrogate_search_bench(*, zoo: Path, quick: bool = False, tasks: tuple[str, ...] | None = None) -> dict:
    """(e): exact forwards to come within 0.5 points of a long run's best, surrogate on vs off."""
    seeds, budget, reference = ((0,), 12, 30) if quick else (SEEDS, BUDGET, REFERENCE)
    if tasks is None:
        tasks = SEARCH_TASKS[:1] if quick else SEARCH_TASKS
    out = {}
    for task in tasks:
        t0 = time.perf_counter()
        out[task] = search_for(world(task, zoo=zoo), seeds=seeds, budget=budget, reference=reference)
        _say(f"(e) {task}: {out[task]} ({time.perf_counter() - t0:.0f} s)")
    ratios = [v["ratio"] for v in out.values()]
    return {"top_k": TOP_K, "within": WITHIN, "median_ratio": float(np.median(ratios)), "tasks": out}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=None, help="a built zoo (default: the seed-0 full zoo)")
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer tasks, compositions, trials")
    parser.add_argument("--only", choices=("accuracy", "search"), default=None)
    parser.add_argument("--tasks", default=None, help="(e)'s tasks, comma-separated (default all four)")
    args = parser.parse_args(argv)
    torch_threads()
    zoo = full_zoo(args.zoo)
    out: dict[str, Any] = {}
    if args.only in (None, "accuracy"):
        out["accuracy"] = surrogate_accuracy_bench(zoo=zoo, quick=args.quick)
    if args.only in (None, "search"):
        tasks = None if args.tasks is None else tuple(t for t in args.tasks.split(",") if t)
        out["search"] = surrogate_search_bench(zoo=zoo, quick=args.quick, tasks=tasks)
    print(json.dumps(out))
    return 0


def torch_threads() -> None:
    """One thread: the pico model gains nothing from more, and the machine is shared."""
    torch.set_num_threads(1)


if __name__ == "__main__":
    sys.exit(main())
