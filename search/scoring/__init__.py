"""Scoring: model loading, rank and generate scorers, nested prefixes, the settings stored with scores."""

from registry.lazy import lazy_namespace

# `evaluate` (the function) is not here: it shares its name with its module.
# Imported on first use (registry/lazy.py): light commands import one module without its siblings.
_EXPORTS = {
    "iter_tasks": "evaluate",
    "load_seq2seq": "models",
    "NestedPrefixScorer": "prefix",
    "prefix_sizes": "prefix",
    "Scorer": "scorer",
    "ScoreResult": "scorer",
    "ScorerSettings": "settings",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)
__all__ = [
    "NestedPrefixScorer",
    "ScoreResult",
    "Scorer",
    "ScorerSettings",
    "iter_tasks",
    "load_seq2seq",
    "prefix_sizes",
]
