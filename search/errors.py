"""Search's errors a user can act on (the CLI prints each as one line); registry's live in `registry.errors`."""

from __future__ import annotations

from registry.errors import TaskvecError


class DataError(TaskvecError):
    """A dataset is missing, malformed or unreachable."""


class SearchError(TaskvecError):
    """A screening or search cannot run as asked."""
