"""GLUE tasks: specs (prompts, label words, metrics), data loading, the search and held-out splits."""

from registry.lazy import lazy_namespace

# Imported on first use (registry/lazy.py): light commands import one module without its siblings.
_EXPORTS = {
    "SEARCH_SOURCES": "data",
    "SearchSource": "data",
    "Split": "data",
    "load_frame": "data",
    "load_split": "data",
    "validation_halves": "data",
    "GLUE_HUB_DATASET": "glue",
    "GLUE_TASKS": "glue",
    "INVALID_LABEL": "glue",
    "TaskSpec": "glue",
    "get_task": "glue",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
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
