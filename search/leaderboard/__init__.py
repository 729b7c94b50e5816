"""The leaderboard: queries over the study's rows, held-out refresh from the registry, the report."""

from search.leaderboard.intervals import recompute_interval
from search.leaderboard.queries import CSV_KEYS, get_row, summary, to_csv
from search.leaderboard.refresh import refresh_heldout
from search.leaderboard.report import write_report
from search.study.records import query, study_best

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
