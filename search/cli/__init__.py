"""The `taskvec` command line."""

from search.cli.app import app, main

__all__ = ["app", "main"]
