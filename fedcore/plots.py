"""The report's figures. One colour per worker and per method or bias level, the same in every figure."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedcore import geometry
from fedcore.remedies import REMEDIES
from fedcore.results import RunResult
from fedcore.stats import Estimate, interval

CENTRALIZED_COLOR = "black"
UNIFORM_COLOR = "tab:green"


def worker_color(worker: int) -> tuple[float, ...]:
    """Worker k's colour (tab10; at full bias worker k holds digit k)."""
    return plt.get_cmap("tab10")(worker % 10)


# The report's bias levels get evenly spaced colours (dark blue at 0 through purple to orange at 1), so the
# crowded levels near 1 stay apart; any other level gets the colour of its value on the same scale.
BIAS_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)


def bias_color(bias: float) -> tuple[float, ...]:
    """A bias level's colour, the same in every figure."""
    position = BIAS_LEVELS.index(bias) / (len(BIAS_LEVELS) - 1) if bias in BIAS_LEVELS else bias
    return plt.get_cmap("plasma")(0.88 * position)


# One colour per method of the remedies chapter (FedAvg keeps the full-bias colour of the other chapters); the
# remedies built for label skew are drawn dash-dotted.
METHOD_COLORS = {
    "fedavg": bias_color(1.0), "fedavgm": "tab:red", "fedprox": "tab:blue", "fedadam": "tab:green",
    "scaffold": "tab:purple", "lr decay": "tab:brown", "shared 5%": "tab:cyan", "fedrs": "tab:pink",
    "fedlc": "tab:olive", "fedntd": "tab:gray", "fedaws": "navy", "fedbabu": "teal",
}


def series_style(label: str) -> dict[str, object]:
    """Colour and line style for a series label: 'non-federated', 'uniform', a bias level ('bias 0.9'),
    a method of METHOD_COLORS, or anything else (a colour from its position in 'viridis' is then chosen
    by the caller)."""
    if label == "non-federated":
        return {"color": CENTRALIZED_COLOR, "linestyle": "--"}
    if label == "uniform":
        return {"color": UNIFORM_COLOR}
    if label in METHOD_COLORS:
        skew = label in REMEDIES and REMEDIES[label].family == "label skew"
        return {"color": METHOD_COLORS[label], **({"linestyle": "-."} if skew else {})}
    return {"color": bias_color(float(label.removeprefix("bias ")))}


def sequence_color(i: int, n: int) -> tuple[float, ...]:
    """The i-th of n ordered values that are not bias levels (e.g. amounts of local work)."""
    return plt.get_cmap("viridis")(0.9 * i / max(n - 1, 1))


def allocation_bars(counts: np.ndarray, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Grouped bar chart: digit on x, one bar per worker (its colour everywhere), digit examples on y."""
    counts = np.asarray(counts)
    workers, classes = counts.shape
    fig, ax = _axes(ax, figsize=(8, 3.6))
    width = 0.8 / workers
    for k in range(workers):
        x = np.arange(classes) - 0.4 + (k + 0.5) * width
        ax.bar(x, counts[k], width, color=worker_color(k), label=f"worker {k}")
    ax.set(xlabel="Digit", ylabel="Digit examples", xticks=range(classes), title=title)
    ax.legend(ncols=5 if workers <= 10 else 10, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    return fig


def allocation_heatmap(counts: np.ndarray, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Workers x digits heatmap of the number of training images."""
    counts = np.asarray(counts)
    fig, ax = _axes(ax, figsize=(5.5, 4.5))
    image = ax.imshow(counts, cmap="Blues", aspect="auto")
    ax.set(xlabel="Digit", ylabel="Worker", xticks=range(counts.shape[1]), yticks=range(counts.shape[0]), title=title)
    fig.colorbar(image, ax=ax, label="Training images")
    fig.tight_layout()
    return fig


def mean_band(results: Sequence[RunResult], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rounds, mean over seeds and the 95% Student-t interval of the mean (equal to the mean for one seed)
    of a per-round column. A seed that diverged stays in: its accuracy at chance (1 / classes) from then
    on, to the last configured round; other columns stop at the last round every seed reached."""
    full = max(int(r.config["rounds"]) + 1 if r.diverged else len(r.rounds) for r in results)
    chance = column.endswith("accuracy")
    n = full if chance else min(len(r.rounds) for r in results)
    rows = []
    for r in results:
        values = r.column(column)[:n]
        rows.append(values + [r.chance] * (n - len(values)) if len(values) < n else values)
    values = np.array(rows, dtype=float)
    mean = values.mean(0)
    half = np.array([interval(column) for column in values.T]) if len(results) > 1 else 0 * mean
    return np.arange(n), mean, mean - half, mean + half  # row i of a run's rounds is round i (0: the start)


def series_label(label: str, results: Sequence[RunResult]) -> str:
    """A legend entry: the series' label, with how many of its seeds diverged where any did."""
    diverged = sum(bool(r.diverged) for r in results)
    return f"{label} ({diverged} of {len(results)} diverged)" if diverged else label


def seed_range(seeds: Sequence[int]) -> str:
    """How many seeds several series rest on: '3', or '3-5' where they differ."""
    low, high = min(seeds), max(seeds)
    return f"{low}" if low == high else f"{low}-{high}"


def band_title(seeds: Sequence[int]) -> str:
    """Legend title saying what the lines and bands are."""
    return "one seed" if max(seeds) == 1 else f"mean of {seed_range(seeds)} seeds, band: 95% interval"


def curves(
    series: Mapping[str, Sequence[RunResult]],
    column: str,
    ax: Axes | None = None,
    title: str | None = None,
    styles: Mapping[str, Mapping[str, object]] | None = None,
) -> Figure:
    """One line per series (mean over its seeds) with a band: the 95% interval of the mean over seeds.

    Colours follow ``series_style`` unless ``styles`` gives them per label."""
    fig, ax = _axes(ax, figsize=(7, 4))
    percent = column.endswith("accuracy")
    for label, results in series.items():
        rounds, mean, lo, hi = mean_band(results, column)
        scale = 100.0 if percent else 1.0
        style = dict(styles[label]) if styles else series_style(label)
        ax.plot(rounds, scale * mean, label=series_label(label, results), **style)
        ax.fill_between(rounds, scale * lo, scale * hi, color=style["color"], alpha=0.2, linewidth=0)
    ylabel = {"test_accuracy": "Test accuracy (%)", "test_loss": "Test loss (cross-entropy, nats)",
              "val_accuracy": "Validation accuracy (%)", "val_loss": "Validation loss (cross-entropy, nats)"}
    ax.set(xlabel="Round", ylabel=ylabel.get(column, column), title=title)
    if percent:
        ax.set_ylim(0, 100)
    ax.legend(title=band_title([len(r) for r in series.values()]), fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def instrument_curves(series: Mapping[str, Sequence[RunResult]], instrument: Callable[[RunResult], tuple[list, list]],
                      ax: Axes, ylabel: str, title: str, styles: Mapping[str, Mapping[str, object]] | None = None,
                      ) -> None:
    """A per-round instrument (``instrument(run)``: rounds and values) for each series: mean over its seeds, band:
    95% interval, to the last round every seed reached (a diverged seed stops early). Colours follow
    ``series_style`` unless ``styles`` gives them per label."""
    for label, results in series.items():
        style = dict(styles[label]) if styles else series_style(label)
        curves = [instrument(r) for r in results]
        n = min(len(rounds) for rounds, _ in curves)
        rounds, per_seed = curves[0][0][:n], np.array([values[:n] for _, values in curves])
        mean = per_seed.mean(0)
        half = np.array([interval(column) for column in per_seed.T]) if len(results) > 1 else 0 * mean
        ax.plot(rounds, mean, label=f"{label} ({len(results)} seeds)", **style)
        ax.fill_between(rounds, mean - half, mean + half, color=style["color"], alpha=0.2, linewidth=0)
    ax.set(xlabel="Round", ylabel=ylabel, title=title)
    ax.legend(title="mean over seeds, band: 95% interval", fontsize="small")
    ax.grid(alpha=0.3)


def geometry_curves(series: Mapping[str, Sequence[RunResult]], axes: Sequence[Axes]) -> None:
    """The why chapter's two per-round instruments for each series (``instrument_curves``): the mean cosine
    similarity between the workers' updates (``axes[0]``) and the share of an update's norm in the output layer
    (``axes[1]``)."""
    instruments = ((geometry.mean_cosine, "Mean cosine similarity between workers' updates",
                    "Do the workers move the same way?"),
                   (geometry.output_share, "Share of the update's norm in the output layer (%)",
                    "Where the workers move the weights"))
    for ax, (value, ylabel, title) in zip(axes, instruments, strict=True):
        instrument_curves(series, lambda r, value=value: geometry.per_round(r, value), ax, ylabel, title)


def worker_accuracies(result: RunResult, ax: Axes | None = None) -> Figure:
    """Each worker's local model (before averaging) and the averaged model: test accuracy per round."""
    fig, ax = _axes(ax, figsize=(7, 4))
    rows = result.workers
    for k in sorted({row["worker"] for row in rows}):
        mine = [row for row in rows if row["worker"] == k]
        ax.plot([r["round"] for r in mine], [100 * r["test_accuracy"] for r in mine], color=worker_color(k),
                linewidth=1, label=f"worker {k}")
    ax.plot(result.column("round"), [100 * a for a in result.column("test_accuracy")], color=CENTRALIZED_COLOR,
            linewidth=2.5, label="averaged model")
    ax.set(xlabel="Round", ylabel="Test accuracy (%)", ylim=(0, 100))
    ax.legend(ncols=2, fontsize="small", loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def predictions(result: RunResult, rnd: int, ax: Axes | None = None) -> Figure:
    """What each worker's local model and the averaged model predict on the test images in round ``rnd``."""
    rows = sorted((r for r in result.workers if r["round"] == rnd), key=lambda r: r["worker"])
    table = np.array([np.array(r["predicted"]) / sum(r["predicted"]) for r in rows])
    averaged = np.array(result.rounds[rnd]["predicted"], dtype=float)
    table = np.vstack([table, averaged / averaged.sum()])
    fig, ax = _axes(ax, figsize=(6, 5))
    image = ax.imshow(100 * table, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
    labels = [f"worker {r['worker']}" for r in rows] + ["averaged"]
    ax.set(xlabel="Predicted digit", xticks=range(table.shape[1]), yticks=range(len(labels)), yticklabels=labels,
           title=f"Share of test images given each digit, round {rnd}")
    for tick, row in zip(ax.get_yticklabels()[:-1], rows, strict=False):
        tick.set_color(worker_color(row["worker"]))
    fig.colorbar(image, ax=ax, label="Test images (%)")
    fig.tight_layout()
    return fig


def heatmap(
    values: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[object],
    xlabel: str,
    ylabel: str,
    label: str,
    ax: Axes | None = None,
    title: str | None = None,
    fmt: str = "{:.0f}",
    cmap: str = "viridis",
    center: float | None = None,
    texts: Sequence[Sequence[str]] | None = None,
) -> Figure:
    """An annotated table of values: rows x columns, each cell coloured and printed (``fmt``, or the cell's
    entry of ``texts`` where given). ``center`` makes a diverging scale symmetric about that value."""
    values = np.asarray(values, dtype=float)
    fig, ax = _axes(ax, figsize=(1.1 * len(columns) + 3, 0.5 * len(rows) + 2))
    limits = {}
    if center is not None:
        reach = np.nanmax(np.abs(values - center))
        limits = {"vmin": center - reach, "vmax": center + reach}
    image = ax.imshow(values, cmap=cmap, aspect="auto", **limits)
    ax.set(xticks=range(len(columns)), xticklabels=[str(c) for c in columns], yticks=range(len(rows)),
           yticklabels=rows, xlabel=xlabel, ylabel=ylabel, title=title)
    middle = np.nanmean(values) if center is None else center
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            light = values[i, j] < middle if center is None else abs(values[i, j] - center) > 0.5 * reach
            text = fmt.format(values[i, j]) if texts is None else texts[i][j]
            ax.text(j, i, text, ha="center", va="center", fontsize="small",
                    color="white" if light else "black")
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    return fig


def estimate_heatmap(
    estimates: Sequence[Sequence[Estimate]], rows: Sequence[str], columns: Sequence[object], xlabel: str, label: str,
    title: str | None = None,
) -> Figure:
    """A heatmap of means over seeds, each cell printed as 'mean ± 95% half-width' (and 'k of n diverged' where
    any seed did); the title's last line says how many seeds."""
    values = np.array([[e.mean for e in row] for row in estimates])
    texts = [[f"{e.mean:.1f}" + (f"\n± {e.half_width:.1f}" if e.n > 1 else "")
              + (f"\n{e.diverged} of {e.n} div." if e.diverged else "") for e in row] for row in estimates]
    note = f"mean ± 95% interval over {seed_range([e.n for row in estimates for e in row])} seeds"
    return heatmap(values, rows, columns, xlabel, "", label, title=f"{title}\n{note}" if title else note, texts=texts)


def confusion(matrix: np.ndarray, ax: Axes | None = None, title: str | None = None) -> Figure:
    """Confusion matrix as row percentages: true digit on y, predicted on x."""
    m = np.asarray(matrix, dtype=float)
    m = 100 * m / m.sum(1, keepdims=True).clip(min=1)
    fig, ax = _axes(ax, figsize=(5.5, 4.5))
    image = ax.imshow(m, cmap="Blues", vmin=0, vmax=100)
    ax.set(xlabel="Predicted digit", ylabel="True digit", xticks=range(m.shape[1]), yticks=range(m.shape[0]),
           title=title)
    fig.colorbar(image, ax=ax, label="Share of the true digit's test images (%)")
    fig.tight_layout()
    return fig


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain HTML table (glued into the book, where it renders on any page)."""
    def cells(tag: str, values: Sequence[object]) -> str:
        return "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in values)

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table class='table'><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax
