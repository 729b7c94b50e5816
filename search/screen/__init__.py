"""Screening: one candidate at a time over a lambda grid, stored as screenings."""

from search.screen.run import DEFAULT_LAMBDAS, parse_lambdas, screen
from search.screen.store import helpful_for, screened_candidates

__all__ = ["DEFAULT_LAMBDAS", "helpful_for", "parse_lambdas", "screen", "screened_candidates"]
