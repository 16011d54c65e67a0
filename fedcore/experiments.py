"""The report's standard experiment and the helpers its notebooks share: which runs, over which seeds."""

from __future__ import annotations

import os
import statistics
from collections.abc import Hashable, Mapping, Sequence

from fedcore import design
from fedcore.config import MAX_THREADS, ConfigError, RunConfig
from fedcore.results import RunResult
from fedcore.runner import run_many
from fedcore.stats import Comparison, Estimate, estimate, paired

THREADS_ENV = "FEDCORE_THREADS"


def book_threads() -> int:
    """Torch threads of the report's runs: $FEDCORE_THREADS where set and not empty (a rebuild with another
    count gives other runs, whose numbers scripts/compare_numbers.py sets against the first build's), else 1."""
    text = os.environ.get(THREADS_ENV) or "1"
    threads = int(text) if text.isascii() and text.isdigit() else 0  # not '²', a digit int() refuses
    if not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"${THREADS_ENV} must be an integer in [1, {MAX_THREADS}]; got {text!r}",
                          param=f"${THREADS_ENV}")
    return threads


# Every federated run in the report, unless a notebook parameter changes it. Each worker's model is
# scored on the first 1,000 test images every round, so any run can show its workers.
STANDARD_SETTINGS: dict[str, object] = {
    "allocation": "biased", "workers": 10, "model": "mlp", "rounds": 50, "local_epochs": None, "local_steps": 50,
    "batch_size": 32, "lr": 0.05, "eval_workers": 1000,
}


def standard() -> RunConfig:
    """The report's standard configuration, on ``book_threads()`` threads (the variable is read here, when
    the configuration is used: a bad value stops that use, not every import of fedcore)."""
    return RunConfig(**STANDARD_SETTINGS, threads=book_threads())


def __getattr__(name: str) -> object:
    """``STANDARD``: ``standard()``, built where it is used."""
    if name == "STANDARD":
        return standard()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


UNIFORM = "uniform"  # a series label: the uniform allocation rather than a bias level

def require(ok: bool, name: str, allowed: str, value: object) -> None:
    """Stop with a ConfigError naming the parameter and its allowed range unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name} must be {allowed}; got {value!r}", param=name)


def check_biases(name: str, biases: object) -> None:
    """A non-empty list (not a string or a number: papermill's -p gives those), each element a bias in
    [0, 1] or the word 'uniform'."""
    require(isinstance(biases, list) and len(biases) > 0, name,
            f"a non-empty list, given with -y (e.g. -y '{name}: [0.5]'), not -p", biases)
    for b in biases:
        ok = b == UNIFORM or (isinstance(b, int | float) and 0.0 <= b <= 1.0)
        require(ok, name, "a list of biases in [0, 1] or 'uniform'", b)


def config_for(bias: float | str, seed: int, **changes: object) -> RunConfig:
    """The standard configuration at a bias level (or 'uniform') and seed."""
    allocation = {"allocation": "uniform"} if bias == UNIFORM else {"bias": float(bias)}
    return standard().replace(**allocation, seed=seed, **changes)


def label(bias: float | str) -> str:
    """Series label of a bias level, as the plots expect it."""
    return UNIFORM if bias == UNIFORM else f"bias {float(bias):g}"


def runs(
    biases: Sequence[float | str], seeds: int = 3, centralized: bool = False, more: int = 5, **changes: object
) -> dict[str, list[RunResult]]:
    """Results per series label: each bias level (and the non-federated model) over seeds 0..seeds-1, and
    over 0..more-1 where its spread is wide (``seeded``); missing runs train together across the cores."""
    levels = {label(b): config_for(b, 0, **changes) for b in biases}
    series = seeded(levels, "federated", seeds, max(more, seeds))
    if centralized:
        central = seeded({"non-federated": config_for(0.0, 0, **changes)}, "centralized", seeds, max(more, seeds))
        series.update(central)
    return series


def grid(configs: Mapping[Hashable, RunConfig], kind: str = "federated") -> dict[Hashable, RunResult]:
    """Results of named configurations (e.g. keyed by (bias, local steps)), trained together where missing.
    A run that diverged comes back with the rounds before it (``result.diverged`` says why)."""
    results = run_many([(c, kind) for c in configs.values()], allow_divergence=True)
    return dict(zip(configs, results, strict=True))


def seed_values(results: Sequence[RunResult], column: str = "test_accuracy", rnd: int | None = None) -> list[float]:
    """Each seed's value of a per-round column at round ``rnd`` (default: the last configured round). A seed
    that diverged before it is counted, never dropped: an accuracy at chance (1 / classes, what a model
    with NaN weights scores at best), a loss as infinite."""
    out = []
    for r in results:
        at = int(r.config["rounds"]) if rnd is None else rnd
        if at < len(r.rounds):
            out.append(float(r.rounds[at][column]))
        elif r.diverged:
            out.append(r.chance if column.endswith("accuracy") else float("inf"))
        else:
            raise ValueError(f"round {at} is beyond the {len(r.rounds) - 1} rounds of run {r.key}")
    return out


def summarize(
    results: Sequence[RunResult], column: str = "test_accuracy", rnd: int | None = None, scale: float = 100.0
) -> Estimate:
    """Mean over seeds and 95% interval of a column at a round (accuracies in percent by default),
    diverged seeds counted as ``seed_values`` says."""
    return estimate(seed_values(results, column, rnd), sum(bool(r.diverged) for r in results)).scaled(scale)


def paired_runs(
    a: Sequence[RunResult], b: Sequence[RunResult], column: str = "test_accuracy", rnd: int | None = None,
    scale: float = 100.0,
) -> Comparison:
    """Paired comparison of two settings' runs, a - b on their common seeds, of a column at a round (accuracies
    in points by default; diverged seeds counted as ``seed_values`` says)."""
    return Comparison(paired(seed_values(a, column, rnd), seed_values(b, column, rnd)).difference.scaled(scale))


def rule(results: Sequence[RunResult], seeds: int, more: int, wide: float) -> int:
    """The seeds the spread rule asks for, judged on the first ``seeds`` runs: ``more`` where a seed diverged
    or the final test accuracy's standard deviation is above ``wide`` points, else ``seeds``."""
    first = results[:seeds]
    spread = len(first) > 1 and statistics.stdev(seed_values(first)) * 100 > wide
    return max(more, seeds) if any(r.diverged for r in first) or spread else seeds


def over_seeds(
    configs: Mapping[Hashable, RunConfig], counts: Mapping[Hashable, int], kind: str = "federated",
    have: Mapping[Hashable, list[RunResult]] | None = None,
) -> dict[Hashable, list[RunResult]]:
    """Each configuration over seeds 0..counts[name]-1 (keeping the runs ``have`` already holds), the missing
    ones trained together across the cores; diverged runs come back marked."""
    have = have or {}
    jobs = [(n, s) for n in configs for s in range(len(have.get(n, [])), counts[n])]
    results = run_many([(configs[n].replace(seed=s), kind) for n, s in jobs], allow_divergence=True)
    out = {n: list(have.get(n, [])) for n in configs}
    for (n, _), result in zip(jobs, results, strict=True):
        out[n].append(result)
    return out


def seeded(
    configs: Mapping[Hashable, RunConfig], kind: str = "federated", seeds: int = 3, more: int = 5, wide: float = 2.0
) -> dict[Hashable, list[RunResult]]:
    """Each configuration over seeds 0..seeds-1, and over seeds 0..more-1 where that was not enough (``rule``:
    the final accuracy's standard deviation above ``wide`` points, or a seed diverged). In the book's build the
    design (fedcore.design) pins each series' seeds instead, and a series whose rule would now ask for more
    says so in the design log. Missing runs train together across the cores; diverged runs come back marked."""
    counts = design.pinned(configs)
    if counts is not None:
        out = over_seeds(configs, counts, kind)
        design.note({n: rule(rs, seeds, more, wide) for n, rs in out.items()}, counts)
        return out
    out = over_seeds(configs, dict.fromkeys(configs, seeds), kind)
    out = over_seeds(configs, {n: rule(rs, seeds, more, wide) for n, rs in out.items()}, kind, have=out)
    design.record({n: len(rs) for n, rs in out.items()})
    return out
