"""What the demo runs and what it returns: its configuration and its results (typed, JSON-ready)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search.tasks import GLUE_TASKS

DESCRIPTION = "`make demo`: the whole pipeline on the offline pico zoo, in minutes on two CPU cores."
BASE_REPO = "pico/t5-pico"
TARGET_FMT = "pico/t5-pico-{task}"
DEMO_LAMBDAS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Attributes:
        out: folder for everything the demo writes (zoo by default, database, studies, report).
        zoo: an existing or wanted zoo folder (default `out/zoo`).
        scale: zoo scale when it must be built (`full` or `tiny`).
        seed: zoo seed.
        tasks: GLUE tasks to screen and search.
        trials: finished trials per study.
        top_k: screened candidates entering each search.
        heldout_top_n: best trials per study scored on the held-out split.
        search_size: examples in each search split (None: the data module's default).
        lambdas: the screening grid.
        progress: show progress bars.
        multi_trials: finished trials of the multi-task search (0 skips it; it needs two tasks or more).
            192, not the single-task 24: it has 8 parameters (4 vectors in or out, 4 lambdas). Measured on
            zoo v8 (AMD EPYC) from a validation half: at 96 trials 2 of 4 searches (zoo seeds 0 and 1,
            sampler seeds 0 to 2 on zoo 0) ended on two vectors, the others on CoLA's vector alone; at
            192 all 4 did, each above the best single on held-out (both with the uniform warm start
            alone; `search.study.space.multitask_warm_start` has what its singles changed).
        multi_objective: its objective (`normalized-mean`, `mean` or `pareto`).
        multi_search_size: examples in each task's search split for the multi-task search (None: all of
            it; from train, the data module's default, the split the zoo's multi-task models left out of
            their training: a larger one would hold rows they trained on).
        multi_search_from: where the multi-task search split comes from: `validation` (one stratified
            half of GLUE validation; held-out: the other half) or `train`. Validation by default: the
            multi-task models trained on all of train but 200 rows per task, and a validation half holds
            300 they never saw. Measured on zoo v8 (AMD EPYC, 192 trials): from those 200 train rows, 2 of
            4 searches ended on CoLA's vector alone at 1.04 (search 70.05, held-out 66.98: the split
            overrates it), from the validation half none did.
    """

    out: Path
    zoo: Path | None = None
    scale: str = "full"
    seed: int = 0
    tasks: tuple[str, ...] = GLUE_TASKS
    trials: int = 24
    top_k: int = 4
    heldout_top_n: int = 3
    search_size: int | None = None
    lambdas: tuple[float, ...] = DEMO_LAMBDAS
    progress: bool = True
    multi_trials: int = 192
    multi_objective: str = "normalized-mean"
    multi_search_size: int | None = None
    multi_search_from: str = "validation"


@dataclass(frozen=True)
class TaskResult:
    """One task's outcome: the target against the best composition found on the search split."""

    task: str
    study: str
    target: str
    target_score_search: float
    target_score_heldout: float | None
    best_trial: int | None
    best_score_search: float | None
    best_score_heldout: float | None
    ingredients: list[dict[str, Any]] = field(default_factory=list)
    n_finished: int = 0
    n_pruned: int = 0
    screened: int = 0
    report: str = ""
    seconds: float = 0.0
    baselines: dict[str, Any] | None = None  # `search.study.Baselines.as_dict()`


@dataclass(frozen=True)
class MultiTaskResult:
    """The multi-task composition against each task's own fine-tuned model and the global-lambda baseline.

    Each `*_scores` maps task -> {"search", "heldout"}; each `*_normalized` maps split -> the normalized
    mean (100 x mean of score / fine-tuned score) over the tasks.
    """

    study: str
    objective: str
    n_finished: int
    n_pruned: int
    best_trial: int | None
    ingredients: list[dict[str, Any]]
    finetuned_scores: dict[str, dict[str, float]]
    base_scores: dict[str, dict[str, float]]
    best_scores: dict[str, dict[str, float | None]]
    baseline_lambda: float
    baseline_scores: dict[str, dict[str, float]]
    base_normalized: dict[str, float]
    best_normalized: dict[str, float | None]
    baseline_normalized: dict[str, float]
    report: str
    seconds: float
    baselines: dict[str, Any] | None = None  # `search.study.Baselines.as_dict()`
    search_from: str = "train"  # where its search split came from (`search.tasks.naming.split_sources`)


@dataclass(frozen=True)
class DemoSummary:
    """The demo's results and timings."""

    zoo: str
    db_url: str
    storage: str
    results: list[TaskResult]
    report: str
    timings: dict[str, float]
    multi: MultiTaskResult | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_urls(out: Path) -> tuple[str, str]:
    """(taskvec database URL, Optuna storage URL) of a demo folder."""
    home = out.resolve() / "home"
    return f"sqlite:///{home / 'taskvec.db'}", f"sqlite:///{home / 'optuna.db'}"
