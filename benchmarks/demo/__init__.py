"""`make demo`: the whole pipeline on the offline pico zoo, in minutes on two CPU cores.

    python -m benchmarks.demo --out demo-out [--zoo DIR] [--scale full|tiny] [--trials 24]

Builds (or reuses) the zoo, syncs the registry from its `hub/`, screens and searches each of the four GLUE
tasks with a small budget, prints the leaderboard (target vs best composition, search and held-out
scores) and writes a report per study plus an index page. Then one multi-task search composes the four
fine-tuned targets from the base into a single model (normalized mean: each task's score over its own
fine-tuned model's) and prints it beside each fine-tuned model and FusionBench's baseline, one global lambda
over the same four task vectors. Everything the demo writes, its database and
Optuna storage included, lives under `--out` (TASKVEC_HOME is pointed there), so it never touches the
user's own taskvec files. Rerunning reuses the zoo, the registry, the screenings and the studies: a
finished demo reruns in seconds, an interrupted one resumes. The last line printed is one JSON object.

Modules: `config` (what runs, what it returns), `run` (the pipeline's steps), `multitask` (the one-model
step and its baseline), `render` (tables, JSON line, index page), `cli` (`main`).
"""

from benchmarks.demo.cli import main
from benchmarks.demo.config import (
    BASE_REPO,
    DEMO_LAMBDAS,
    TARGET_FMT,
    DemoConfig,
    DemoSummary,
    MultiTaskResult,
    TaskResult,
    demo_urls,
)
from benchmarks.demo.multitask import run_multitask
from benchmarks.demo.render import leaderboard_table, multitask_table
from benchmarks.demo.run import ensure_zoo, run_demo

__all__ = [
    "BASE_REPO",
    "DEMO_LAMBDAS",
    "TARGET_FMT",
    "DemoConfig",
    "DemoSummary",
    "MultiTaskResult",
    "TaskResult",
    "demo_urls",
    "ensure_zoo",
    "leaderboard_table",
    "main",
    "multitask_table",
    "run_demo",
    "run_multitask",
]
