"""What a printed score is: the task's metric and the split it was computed on, said once for every table,
plot and page (`score_footnote`), e.g. "SST-2: accuracy ×100; search = 10% sample of GLUE train,
held-out = GLUE validation".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from search.errors import DataError
from search.tasks.glue import get_task

# As the GLUE paper and the T5 paper print them.
DISPLAY_NAMES = {"mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "sst2": "SST-2", "qqp": "QQP", "mnli": "MNLI"}

# search_from -> (where the search split comes from, what the held-out split is); see search.tasks.data.
SPLIT_SOURCES = {
    "train": ("a stratified sample of {glue} train", "{glue} validation"),
    "validation": ("one stratified half of {glue} validation", "the other half of {glue} validation"),
}

# A multi-task row's score is its objective over the tasks (search.study.objectives).
OBJECTIVE_LABELS = {
    "mean": "score = mean of the tasks' scores",
    "normalized-mean": "score = mean of each task's score / its fine-tuned model's score, ×100",
    "pareto": "score = mean of the tasks' scores (the front is over every task)",
}


def task_label(task: str) -> str:
    """`SST-2` for `sst2`; an unknown task as given."""
    return DISPLAY_NAMES.get(task, task)


def metric_label(task: str) -> str:
    """`mean(F1, accuracy) ×100` for MRPC: the task's metric as every score of it is printed."""
    try:
        return f"{get_task(task).metric_name} ×100"
    except DataError:  # a task no spec names (a row written by something else): claim no metric
        return "score ×100"


def split_sources(search_from: str = "train", *, glue: str = "GLUE") -> tuple[str, str]:
    """(search split, held-out split) in words, for a study searched from `train` or `validation`;
    `glue` names the data (a model card names a local folder)."""
    search, heldout = SPLIT_SOURCES.get(search_from, (f"{search_from} (unknown source)", "its complement"))
    return search.format(glue=glue), heldout.format(glue=glue)


def search_from_of(row: Mapping[str, Any]) -> str:
    """Where a leaderboard or screening row's search split came from (`train` when not recorded)."""
    if row.get("search_from"):
        return str(row["search_from"])
    return str((row.get("scorer") or {}).get("search_from") or "train")


def metric_footnote(tasks: Iterable[str]) -> str:
    """`MRPC: mean(F1, accuracy) ×100, RTE: accuracy ×100` (comma-joined multi-task labels split)."""
    names = list(dict.fromkeys(t for label in tasks for t in str(label).split(",") if t))
    return ", ".join(f"{task_label(t)}: {metric_label(t)}" for t in names) or "scores ×100"


def score_footnote(
    tasks: Iterable[str], *, search_from: Iterable[str] | str = "train", objectives: Iterable[str] = ()
) -> str:
    """One line naming each task's metric and both splits.

    Args:
        tasks: the tasks whose scores are shown (repeats and a comma-joined multi-task label are fine).
        search_from: the search splits' source(s), `train` or `validation`; several when the rows mix them.
        objectives: the rows' objectives; a multi-task one says how the tasks' scores combine.

    Returns:
        e.g. `MRPC: mean(F1, accuracy) ×100; search = a stratified sample of GLUE train, held-out = GLUE
        validation`.
    """
    metrics = metric_footnote(tasks)
    sources = [search_from] if isinstance(search_from, str) else list(dict.fromkeys(search_from))
    splits = "; ".join(
        "search = {}, held-out = {}".format(*split_sources(source)) for source in sources or ["train"]
    )
    combined = [OBJECTIVE_LABELS[o] for o in dict.fromkeys(objectives) if o in OBJECTIVE_LABELS]
    return "; ".join([metrics, *combined, splits])


def search_footnote(tasks: Iterable[str], *, search_from: Iterable[str] | str = "train") -> str:
    """For scores on the search split only (screening): `SST-2: accuracy ×100; all on the search split
    = a stratified sample of GLUE train`."""
    sources = [search_from] if isinstance(search_from, str) else list(dict.fromkeys(search_from))
    where = " / ".join(split_sources(source)[0] for source in sources or ["train"])
    return f"{metric_footnote(tasks)}; all on the search split = {where}"
