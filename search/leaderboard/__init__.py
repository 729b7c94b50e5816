"""The leaderboard: queries over the study's rows, held-out refresh from the registry, the report."""

from registry.lazy import lazy_namespace

# Imported on first use (registry/lazy.py): light commands import one module without its siblings.
_EXPORTS = {
    "recompute_interval": "intervals",
    "CSV_KEYS": "queries",
    "get_row": "queries",
    "summary": "queries",
    "to_csv": "queries",
    "refresh_heldout": "refresh",
    "write_report": "report",
    "query": "search.study.records",
    "study_best": "search.study.records",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
__all__ = [
    "CSV_KEYS",
    "get_row",
    "query",
    "recompute_interval",
    "refresh_heldout",
    "study_best",
    "summary",
    "to_csv",
    "write_report",
]
