"""The finding's helpers: seeds added where the spread is wide, and numbers read off a figure by eye."""

from __future__ import annotations

import pytest

from fedcore import experiments
from fedcore.results import RunResult
from fedcore.stats import against_reading, estimate


def run(final: float) -> RunResult:
    rows = [{"round": 0, "test_accuracy": 0.1, "test_loss": 2.3},
            {"round": 1, "test_accuracy": final, "test_loss": 0.5}]
    return RunResult("federated", "k", {"rounds": 1}, rounds=rows)


def test_a_figure_read_by_eye_agrees_where_the_interval_overlaps_its_tolerance():
    est = estimate([80.0, 81.0, 82.0])  # 81 +- 2.5
    assert against_reading(est, 85.0, 2.0) == "agrees"  # 83.5 reaches 83
    assert against_reading(est, 86.0, 2.0) == "lower" and against_reading(est, 76.0, 2.0) == "higher"
    assert against_reading(estimate([81.0]), 83.0, 2.0) == "agrees"  # one seed: the mean alone
    assert against_reading(estimate([81.0]), 83.5, 2.0) == "lower"


def test_runs_add_seeds_only_where_the_spread_is_wide(monkeypatch):
    # bias 1 spreads 3 points (sd) over seeds 0..2; bias 0 and the non-federated model 0.1
    def fake_run_many(jobs, allow_divergence=False):
        assert allow_divergence
        wide = [c.bias == 1.0 and kind == "federated" for c, kind in jobs]
        return [run(0.8 + 0.03 * (c.seed % 3 - 1) if w else 0.95 + 0.001 * c.seed)
                for (c, kind), w in zip(jobs, wide, strict=True)]

    monkeypatch.setattr(experiments, "run_many", fake_run_many)
    series = experiments.runs([0.0, 1.0], seeds=3, centralized=True, more=5)
    assert {k: len(v) for k, v in series.items()} == {"bias 0": 3, "bias 1": 5, "non-federated": 3}
    assert [r.rounds[1]["test_accuracy"] for r in series["bias 1"]] == pytest.approx([0.77, 0.8, 0.83, 0.77, 0.8])
    assert len(experiments.runs([1.0], seeds=3, more=3)["bias 1"]) == 3  # more <= seeds: no extension
    assert len(experiments.runs([1.0], seeds=1)["bias 1"]) == 1  # one seed has no spread to judge
