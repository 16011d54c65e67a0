import matplotlib

matplotlib.use("Agg")

import numpy as np

from fedcore import plots
from fedcore.results import RunResult


def fake_result(acc: list[float]) -> RunResult:
    rounds = [{"round": r, "test_accuracy": a, "test_loss": 1 - a, "predicted": [1] * 10} for r, a in enumerate(acc)]
    workers = [{"round": r, "worker": k, "test_accuracy": 0.1, "predicted": [int(d == k) * 9 + 1 for d in range(10)]}
               for r in range(1, len(acc)) for k in range(10)]
    return RunResult("federated", "x", {}, rounds=rounds, workers=workers)


def test_allocation_bars_have_one_labelled_series_per_worker():
    counts = np.diag(np.full(10, 600)) + 5
    ax = plots.allocation_bars(counts).axes[0]
    assert ax.get_xlabel() == "Digit" and ax.get_ylabel() == "Digit examples"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"worker {k}" for k in range(10)]
    assert ax.containers[3][0].get_facecolor() == plots.worker_color(3)


def test_curves_show_mean_and_band_with_consistent_colours():
    series = {"bias 0.9": [fake_result([0.1, 0.5, 0.7]), fake_result([0.1, 0.6, 0.9])],
              "non-federated": [fake_result([0.1, 0.9, 0.95])] * 2}
    ax = plots.curves(series, "test_accuracy").axes[0]
    line = ax.get_lines()[0]
    assert np.allclose(line.get_ydata(), [10, 55, 80])
    assert line.get_color() == plots.bias_color(0.9)
    assert ax.get_ylabel() == "Test accuracy (%)" and ax.get_xlabel() == "Round"
    assert "2 seeds" in ax.get_legend().get_title().get_text()


def test_worker_figures_render():
    result = fake_result([0.1, 0.5, 0.7])
    assert len(plots.worker_accuracies(result).axes[0].get_lines()) == 11
    assert plots.predictions(result, 1).axes[0].get_xlabel() == "Predicted digit"


def test_estimate_heatmap_prints_mean_interval_and_diverged_seeds():
    from fedcore.stats import estimate

    cells = [[estimate([80.0, 82.0, 84.0]), estimate([10.0, 50.0, 60.0], diverged=1)]]
    fig = plots.estimate_heatmap(cells, ["bias 1"], [5, 50], "Local steps per round", "Accuracy (%)", title="t")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "82.0\n± 5.0" and texts[1].endswith("1 of 3 div.")
    assert ax.get_title() == "t\nmean ± 95% interval over 3 seeds"
    assert ax.images[0].get_array()[0, 1] == 40.0
