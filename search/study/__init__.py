"""The composition search: one Optuna study over subsets and coefficients of task vectors."""

from search.study.run import (
    BaselineResult,
    SearchConfig,
    SearchSummary,
    default_storage,
    default_study_name,
    global_lambda_baseline,
    parse_duration,
    run_search,
)

__all__ = [
    "BaselineResult",
    "SearchConfig",
    "SearchSummary",
    "default_storage",
    "default_study_name",
    "global_lambda_baseline",
    "parse_duration",
    "run_search",
]
