"""The leaderboard: queries over the study's rows, held-out refresh, the report."""

from search.leaderboard.report import write_report
from search.leaderboard.rows import get_row, refresh_heldout, summary, to_csv
from search.study.records import query, study_best

__all__ = ["get_row", "query", "refresh_heldout", "study_best", "summary", "to_csv", "write_report"]
