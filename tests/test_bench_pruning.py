"""Smoke test of the pruning benchmark (benchmarks/bench_pruning.py): both arms run the search's own trial
at t5-small shape and the ratio is a ratio of measured rates."""

from __future__ import annotations

import pytest

from benchmarks.bench_pruning import pruning_bench


@pytest.mark.slow
def test_pruning_bench_quick_runs_both_arms():
    result = pruning_bench(quick=True, seed=0)
    on, off = result["on"], result["off"]
    assert (on["trials"], off["trials"]) == (10, 1)
    assert off["pruned"] == 0 and off["rungs"] == [200]
    assert on["rungs"] == [67, 200]
    # A 10-trial study's pruner waits for 8 trials per rung (issue 12's small budgets): the 8th on can stop.
    assert on["min_trials_per_rung"] == 8 and result["trials_on"] == 10
    assert on["pruned"] <= 10 - 7
    assert off["examples_scored"] == 200 and on["examples_scored"] <= 10 * 200
    assert result["ratio"] == pytest.approx(on["trials_per_s"] / off["trials_per_s"], rel=1e-2)
