"""The patient rung pruner (search/study/sampling.py): its warm-up follows the study's quota, it keeps the top
1 / rf of the trials at a rung, and a trial tied with earlier ones ranks behind them."""

from __future__ import annotations

import optuna
import pytest

from search.study import SearchConfig
from search.study.sampling import RungPruner, make_pruner, min_trials_per_rung

RUNG = 67


def _study(values: list[float], *, direction: str = "maximize") -> optuna.Study:
    """Trials that reported `values` at the rung (all but the last finished); the last one is judged."""
    study = optuna.create_study(direction=direction)
    for i, value in enumerate(values):
        last = i == len(values) - 1
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING if last else optuna.trial.TrialState.PRUNED,
                intermediate_values={RUNG: value},
                params={},
                distributions={},
            )
        )
    return study


def _judged(values: list[float], *, min_trials: int = 4, direction: str = "maximize") -> bool:
    study = _study(values, direction=direction)
    pruner = RungPruner(rungs=[RUNG, 3 * RUNG], reduction_factor=3, min_trials=min_trials)
    return pruner.prune(study, study.trials[-1])


@pytest.mark.parametrize(
    ("n_trials", "expected"),
    [(1, 8), (12, 8), (16, 8), (24, 8), (25, 8), (32, 6), (40, 5), (48, 4), (60, 4), (100, 4), (1000, 4)],
)
def test_warm_up_is_patient_for_small_budgets_and_shorter_for_long_ones(n_trials, expected):
    assert min_trials_per_rung(n_trials) == expected


def test_make_pruner_takes_the_warm_up_from_the_quota():
    sizes = [67, 201, 600]
    small = make_pruner(SearchConfig(task="sst2", target="t", n_trials=16), sizes)
    long = make_pruner(SearchConfig(task="sst2", target="t", n_trials=100), sizes)
    assert (small.min_trials, long.min_trials) == (8, 4)
    assert small.rungs == frozenset({67, 201})
    off = make_pruner(SearchConfig(task="sst2", target="t", pruning=False), sizes)
    assert isinstance(off, optuna.pruners.NopPruner)


def test_no_trial_stops_before_the_warm_up():
    assert not _judged([60.0, 61.0, 62.0, 10.0], min_trials=5)
    assert _judged([60.0, 61.0, 62.0, 63.0, 10.0], min_trials=5)


def test_keeps_the_top_third():
    # Six trials at the rung: the best two go on.
    assert not _judged([50.0, 51.0, 52.0, 53.0, 54.0, 60.0])
    assert not _judged([50.0, 51.0, 52.0, 53.0, 60.0, 55.0])
    assert _judged([50.0, 51.0, 52.0, 60.0, 61.0, 53.0])
    # Minimizing: the lowest two go on.
    assert not _judged([50.0, 51.0, 52.0, 53.0, 54.0, 40.0], direction="minimize")
    assert _judged([50.0, 51.0, 52.0, 53.0, 54.0, 55.0], direction="minimize")


def test_a_tie_ranks_behind_the_earlier_trials():
    # The two slots are held by the earlier 52s: a third 52 shows nothing better and stops (keeping every
    # tie at the cutoff would let a plateau of identical prefix scores run to the end).
    assert _judged([52.0, 52.0, 40.0, 41.0, 42.0, 52.0])
    # One slot left for the tie: an earlier trial holds only one of the two.
    assert not _judged([52.0, 40.0, 41.0, 42.0, 43.0, 52.0])
    # An earlier trial's tie with a later one is judged in its favour (stateless: order by trial number).
    study = _study([52.0, 52.0, 52.0, 40.0, 41.0, 42.0])
    pruner = RungPruner(rungs=[RUNG], reduction_factor=3, min_trials=4)
    first, third = study.trials[0], study.trials[2]
    assert not pruner.prune(study, first) and pruner.prune(study, third)


def test_steps_off_the_rungs_are_never_judged():
    study = _study([60.0, 61.0, 62.0, 63.0, 10.0])
    pruner = RungPruner(rungs=[2 * RUNG], reduction_factor=3, min_trials=2)
    assert not pruner.prune(study, study.trials[-1])
