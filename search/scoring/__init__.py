"""Scoring: model loading, rank and generate scorers, nested prefixes, the settings stored with scores."""

from search.scoring.evaluate import evaluate, iter_tasks
from search.scoring.models import load_seq2seq
from search.scoring.prefix import NestedPrefixScorer, prefix_sizes
from search.scoring.scorer import Scorer, ScoreResult
from search.scoring.settings import ScorerSettings

__all__ = [
    "NestedPrefixScorer",
    "ScoreResult",
    "Scorer",
    "ScorerSettings",
    "evaluate",
    "iter_tasks",
    "load_seq2seq",
    "prefix_sizes",
]
