"""taskvec search: scoring, task vectors, screening and composition search."""

from registry import __version__

__all__ = ["__version__"]
