"""Intervals over seeds, paired verdicts, diverged seeds counted, and glued numbers that carry their record."""

from __future__ import annotations

import json
import math

import pytest
from IPython.core.formatters import format_display_data

from fedcore.experiments import seed_values, summarize
from fedcore.plots import mean_band
from fedcore.report import MIME, Number
from fedcore.results import RunResult
from fedcore.stats import estimate, paired, t975


def run(accuracies: list[float], diverged: bool = False, rounds: int | None = None) -> RunResult:
    rows = [{"round": i, "test_accuracy": a, "test_loss": 1 - a, "predicted": [1] * 10}
            for i, a in enumerate(accuracies)]
    config = {"rounds": rounds if rounds is not None else len(accuracies) - 1}
    return RunResult("federated", "k", config, rounds=rows, diverged="loss became nan" if diverged else None)


def test_estimate_is_the_student_t_interval_of_the_mean():
    est = estimate([1.0, 2.0, 3.0])
    assert est.mean == 2.0 and est.n == 3
    assert est.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert est.sd == pytest.approx(1.0)
    assert t975(100) == 1.96 and t975(1) == 12.706
    assert math.isnan(estimate([0.5]).half_width) and estimate([0.5]).text() == "0.5, one seed"
    assert estimate([0.0, 2.0], diverged=1).text() == "1.0 ± 12.7, 1 of 2 diverged"


def test_paired_verdicts_need_the_interval_to_exclude_zero():
    a, b = [0.80, 0.82, 0.81, 0.83], [0.70, 0.73, 0.71, 0.72]
    assert paired(a, b).verdict == "higher" and paired(b, a).verdict == "lower"
    sentence = paired([100 * x for x in a], [100 * x for x in b]).sentence("A", "B")
    assert sentence == "A is higher than B by 10.0 points (95% interval of the paired difference 8.7 to 11.3, 4 seeds)"
    noisy = paired([0.8, 0.6, 0.9], [0.7, 0.75, 0.7])
    assert noisy.verdict == "indistinguishable" and "cannot be told apart" in noisy.sentence("A", "B")
    assert paired([0.9], [0.1]).verdict == "indistinguishable"  # one seed ranks nothing
    assert not paired(a, b).close  # 10 points, interval 8.7 to 11.3: far from 0
    barely = paired([3.0, 2.0, 1.0, 1.0, 6.0], [0.0] * 5)  # 2.6 points, interval 0.03 to 5.2
    assert barely.verdict == "higher" and barely.close and not noisy.close
    almost = paired([3.0, 2.0, 0.0, 1.0, 6.0], [0.0] * 5)  # 2.4 points, interval -0.5 to 5.3: barely undecided
    assert almost.verdict == "indistinguishable" and almost.close
    assert not paired([3.0], [0.0]).close  # one seed decides nothing, so nothing is close
    # pairing removes what the seeds share: unpaired these intervals overlap
    shared = [0.5, 0.7, 0.9]
    assert paired([s + 0.01 for s in shared], shared).verdict == "higher"


def test_a_diverged_seed_counts_at_chance_in_the_mean_and_the_band():
    ok, bad = run([0.1, 0.5, 0.9]), run([0.1, 0.6], diverged=True, rounds=2)
    assert seed_values([ok, bad]) == [0.9, 0.1]
    est = summarize([ok, bad])
    assert est.mean == pytest.approx(50.0) and est.diverged == 1 and est.n == 2
    rounds, mean, lo, hi = mean_band([ok, bad], "test_accuracy")
    assert list(rounds) == [0, 1, 2] and mean[-1] == pytest.approx(0.5)
    assert lo[-1] < 0.5 < hi[-1]
    assert len(mean_band([ok, bad], "test_loss")[0]) == 2  # losses stop where a seed stopped
    early = run([0.1, 0.3], diverged=True, rounds=4)  # every seed diverged: chance to the last configured round
    assert list(mean_band([early, early], "test_accuracy")[1]) == pytest.approx([0.1, 0.3, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="beyond"):
        seed_values([run([0.1, 0.5])], rnd=5)


def test_a_glued_number_shows_its_value_and_carries_its_interval():
    number = Number.of(estimate([79.0, 81.0, 80.0]))
    data, _ = format_display_data(number)
    assert float(data["text/plain"]) == 80.0
    record = json.loads(json.dumps(data[MIME]))
    assert record["kind"] == "estimate" and record["seeds"] == 3
    assert record["low"] == pytest.approx(80 - 2.484, abs=1e-3) and record["high"] > 80
    assert Number.of(estimate([80.0])).low is None
    with pytest.raises(ValueError, match="kind must be one of"):
        Number(1.0, "guess")


def test_paired_runs_compare_settings_seed_by_seed_in_points():
    from fedcore.experiments import paired_runs

    def runs(accs):
        return [RunResult("federated", f"k{i}", {"rounds": 1}, rounds=[{"round": 0, "test_accuracy": 0.1},
                                                                      {"round": 1, "test_accuracy": a}])
                for i, a in enumerate(accs)]

    better = paired_runs(runs([0.80, 0.60, 0.70]), runs([0.78, 0.57, 0.675]))
    assert better.verdict == "higher" and abs(better.difference.mean - 2.5) < 1e-9
    assert paired_runs(runs([0.80, 0.60]), runs([0.70, 0.75])).verdict == "indistinguishable"


def test_a_glued_number_passes_the_notebook_validation_papermill_applies():
    import nbformat

    data, _ = format_display_data(Number.of(estimate([79.0, 81.0, 80.0])))
    record = {f"application/papermill.record/{mime}": value for mime, value in data.items()}
    cell = nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", data=record)])
    nbformat.validate(nbformat.v4.new_notebook(cells=[cell]))
