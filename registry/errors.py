"""Errors a user can act on. The CLI prints them as one line; anything else is a bug and shows a traceback."""

from __future__ import annotations


class TaskvecError(Exception):
    """A failure with a one-line, user-facing explanation (name the file/repo and the reason)."""


class ModelError(TaskvecError):
    """A model or checkpoint cannot be loaded or does not match what it is combined with."""


class RegistryError(TaskvecError):
    """The registry database or a checkpoint source failed."""
