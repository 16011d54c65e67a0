"""Tuning the remedies in the open: each remedy's grid (``experiments.REMEDIES``) at full bias, scored on
validation images held out of the training set (never the test set), in each scenario the book compares.

Every run of a scenario, tuning and comparison alike, holds out the same ``VALIDATION`` training images and
trains on the rest, so the tuning runs at the chosen values (seeds 0..TUNING_SEEDS-1) are the first seeds of
the comparison. The choice is computed from the stored tuning runs, never typed in: per remedy, the grid value
with the highest validation accuracy, averaged over the last ``LAST`` rounds and then over the tuning seeds
(a diverged seed counts at chance); ties go to the first value of the grid.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from fedcore import design
from fedcore.config import RunConfig
from fedcore.experiments import REMEDIES, STANDARD, over_seeds, paired_runs, require, rule, seed_values
from fedcore.results import RunResult
from fedcore.runner import run_many
from fedcore.stats import Estimate, estimate

# The two scenarios the book compares at full bias: the standard local work (50 steps, 50 rounds) and heavy
# local work (one epoch of 188 steps with local momentum 0.9, 20 rounds).
SCENARIOS: dict[str, dict[str, object]] = {
    "standard": {},
    "heavy": {"local_steps": 188, "momentum": 0.9, "rounds": 20},
}
VALIDATION = 6000  # training images held out (10%): the workers share the other 54,000
TUNING_SEEDS = 2
LAST = 5  # final rounds whose validation accuracy is averaged (less noise than the last round alone)
SEEDS, MORE_SEEDS, WIDE = 3, 5, 2.0  # the spread rule of experiments.seeded: 3 seeds, 5 where sd > 2 points
CLOSE_SEEDS = 10  # seeds of a remedy and the baseline where its verdict against the baseline is close

Candidate = tuple[str, int]  # (remedy, index in its grid)


def check_scenario(scenario: object) -> None:
    """Stop with a ConfigError naming ``scenario`` unless it is one of SCENARIOS."""
    require(scenario in SCENARIOS, "scenario", "one of " + ", ".join(SCENARIOS), scenario)


def base(scenario: str) -> RunConfig:
    """The configuration every method of a scenario starts from: full bias, validation held out, no worker
    scoring."""
    check_scenario(scenario)
    return STANDARD.replace(bias=1.0, eval_workers=0, validation=VALIDATION, **SCENARIOS[scenario])


def tuned() -> list[str]:
    """The remedies with a grid (more than one value)."""
    return [m for m, grid in REMEDIES.items() if len(grid) > 1]


def setting(changes: dict[str, object]) -> str:
    """A grid value in words, e.g. 'server_lr 0.5, server_momentum 0.9' (the strategy's name left out)."""
    return ", ".join(f"{k} {v:g}" for k, v in changes.items() if k != "strategy") or "standard settings"


def candidates(scenario: str) -> dict[Candidate, RunConfig]:
    """Every grid value of every tuned remedy, as a configuration (seed 0)."""
    start = base(scenario)
    return {(m, i): start.replace(**changes) for m in tuned() for i, changes in enumerate(REMEDIES[m])}


def tuning_runs(scenario: str) -> dict[Candidate, list[RunResult]]:
    """The tuning runs (TUNING_SEEDS seeds per candidate), from the store or trained together across the cores."""
    configs = candidates(scenario)
    jobs = [(c.replace(seed=s), "federated") for c in configs.values() for s in range(TUNING_SEEDS)]
    results = run_many(jobs, allow_divergence=True)
    return {k: results[i * TUNING_SEEDS : (i + 1) * TUNING_SEEDS] for i, k in enumerate(configs)}


def score(results: Sequence[RunResult]) -> Estimate:
    """Validation accuracy (percent) over the seeds, each seed's the mean of its last LAST rounds."""
    rounds = int(results[0].config["rounds"])
    window = range(max(1, rounds - LAST + 1), rounds + 1)
    per_seed = [statistics.fmean(v) for v in zip(*(seed_values(results, "val_accuracy", r) for r in window),
                                                  strict=True)]
    return estimate(per_seed, sum(bool(r.diverged) for r in results)).scaled(100)


def choose(runs: dict[Candidate, list[RunResult]]) -> dict[str, int]:
    """Per tuned remedy, the grid index with the highest mean validation score (the first on ties)."""
    scores = {k: score(rs).mean for k, rs in runs.items()}
    return {m: max(range(len(REMEDIES[m])), key=lambda i: (scores[(m, i)], -i)) for m in tuned()}


def chosen(scenario: str) -> dict[str, dict[str, object]]:
    """Every method's changes to ``base(scenario)``: the untuned as defined, the tuned at their chosen value."""
    picks = choose(tuning_runs(scenario))
    return {m: grid[picks.get(m, 0)] for m, grid in REMEDIES.items()}


def wanted(series: dict[str, list[RunResult]], methods: Sequence[str]) -> dict[str, int]:
    """The seeds the rules ask for each method, judged on the runs at hand: the spread rule
    (``experiments.rule``), then every method at least as many as the baseline (``methods[0]``), so that each
    is compared with it on the same seeds; where a method's verdict against the baseline is close
    (``Comparison.close``), it and the baseline CLOSE_SEEDS."""
    baseline = methods[0]
    first = {m: rule(series[m], SEEDS, MORE_SEEDS, WIDE) for m in methods}
    counts = {m: max(first[m], first[baseline]) for m in methods}
    close = [m for m in methods[1:]
             if paired_runs(series[m][: counts[m]], series[baseline][: counts[baseline]]).close]
    for m in [baseline, *close] if close else []:
        counts[m] = max(counts[m], CLOSE_SEEDS)
    return counts


def comparison(scenario: str, methods: Sequence[str]) -> dict[str, list[RunResult]]:
    """Each method at its chosen setting over the seeds ``wanted`` asks for (first SEEDS each, then more as the
    rules say), trained together where missing. In the book's build the design (fedcore.design) pins each
    method's seeds instead, and a method whose rules would now ask for more says so in the design log."""
    settings = chosen(scenario)
    start = base(scenario)
    configs = {m: start.replace(**settings[m]) for m in methods}
    counts = design.pinned(configs)
    if counts is not None:
        series = over_seeds(configs, counts)
        design.note(wanted(series, methods), counts)
        return series
    series = over_seeds(configs, dict.fromkeys(configs, SEEDS))
    baseline = methods[0]
    spread = {m: rule(series[m], SEEDS, MORE_SEEDS, WIDE) for m in methods}
    series = over_seeds(configs, {m: max(spread[m], spread[baseline]) for m in methods}, have=series)
    series = over_seeds(configs, wanted(series, methods), have=series)
    design.record({m: len(rs) for m, rs in series.items()})
    return series
