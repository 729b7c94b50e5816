"""The composition search: one Optuna study over subsets and coefficients of task vectors.

Modules, in the order a search runs through them: `config` (what is asked, the study's name), `space`
(candidates, parameters, warm start), `context` (what the study freezes; what each worker measures),
`storage` (Optuna's storage; the only Optuna-private code), `live` (one worker's model and scorers),
`objective` (one trial), `sampling` (sampler, pruner), `trials` and `records` (leaderboard rows),
`heldout` (the top rows' held-out scores), `run` (the loop), `baselines` (the obvious alternatives: target, best single, add-all, FusionBench's global lambda),
`objectives` and `references` (several tasks).
"""

from search.study.baselines import (
    BASELINE_LAMBDAS,
    BASELINE_NAMES,
    Baseline,
    BaselineResult,
    Baselines,
    baseline_studies,
    global_lambda_baseline,
    live_baselines,
    load_baselines,
    save_baselines,
    study_baselines,
)
from search.study.config import SAMPLERS, SearchConfig, SearchSummary, default_study_name, parse_duration
from search.study.context import STUDY_ATTR, StudyContext, TargetScores, stored_context
from search.study.heldout import heldout_objective, score_top_heldout
from search.study.live import LiveStudy, open_live
from search.study.objective import InterruptGate, Objective
from search.study.run import run_search
from search.study.space import (
    coefficients_from_params,
    lambda_param,
    multitask_candidates,
    multitask_warm_start,
    select_candidates,
    use_param,
    warm_start_params,
)
from search.study.storage import default_storage, fail_unbeaten_trials, open_storage
from search.study.trials import trial_feasible, trial_row, trial_value

__all__ = [
    "BASELINE_LAMBDAS",
    "SAMPLERS",
    "STUDY_ATTR",
    "BASELINE_NAMES",
    "Baseline",
    "BaselineResult",
    "Baselines",
    "InterruptGate",
    "LiveStudy",
    "Objective",
    "SearchConfig",
    "SearchSummary",
    "StudyContext",
    "TargetScores",
    "coefficients_from_params",
    "default_storage",
    "default_study_name",
    "fail_unbeaten_trials",
    "baseline_studies",
    "global_lambda_baseline",
    "live_baselines",
    "load_baselines",
    "save_baselines",
    "study_baselines",
    "heldout_objective",
    "lambda_param",
    "multitask_candidates",
    "multitask_warm_start",
    "open_live",
    "open_storage",
    "parse_duration",
    "run_search",
    "score_top_heldout",
    "select_candidates",
    "stored_context",
    "trial_feasible",
    "trial_row",
    "trial_value",
    "use_param",
    "warm_start_params",
]
