"""GLUE tasks: specs (prompts, label words, metrics), data loading, the search and held-out splits."""

from search.tasks.data import SEARCH_SOURCES, SearchSource, Split, load_frame, load_split, validation_halves
from search.tasks.glue import GLUE_HUB_DATASET, GLUE_TASKS, INVALID_LABEL, TaskSpec, get_task

__all__ = [
    "GLUE_HUB_DATASET",
    "GLUE_TASKS",
    "INVALID_LABEL",
    "SEARCH_SOURCES",
    "SearchSource",
    "Split",
    "TaskSpec",
    "get_task",
    "load_frame",
    "load_split",
    "validation_halves",
]
