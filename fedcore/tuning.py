"""Tuning the remedies in the open: each remedy's grid (fedcore.remedies) at full bias, scored on validation
images held out of the training set (never the test set), in each scenario the book compares.

Every run of a scenario, tuning and comparison alike, holds out the same ``VALIDATION`` training images and
trains on the rest, so the tuning runs at the chosen values (seeds 0..TUNING_SEEDS-1) are the first seeds of
the comparison. The grids are searched by successive halving (as in Hyperband and ASHA): every value runs the
first ``1/RUNG`` of the rounds at the tuning seeds, and the better half of the values (by validation score) is
continued to the full rounds, from where it stopped (the run store keeps the rung's checkpoints: the continued
run is the full-length run bit for bit). The choice is made on the full-length score, never typed in: per
remedy, the value with the highest validation accuracy averaged over the last ``LAST`` rounds and then over
the tuning seeds (a diverged seed counts at chance); ties go toward FedAvg (``Grid.weaker``). A choice on an
edge of the grid extends it by the next value on that side (``Grid.below``/``above``), run at full length,
until the choice is inside or the extensions run out.

The search runs in ``make design``, apart from the book's build: ``fedcore.search_record`` keeps its runs'
validation histories and its choices in the committed record that the book's pages read.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from fedcore import design
from fedcore.config import RunConfig
from fedcore.experiments import over_seeds, paired_runs, require, seed_values, standard
from fedcore.remedies import REMEDIES, tuned
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
RUNG = 2  # successive halving: every value runs rounds // RUNG rounds, the better 1/RUNG of them all rounds
LAST = 5  # final rounds whose validation accuracy is averaged (less noise than the last round alone)
SEEDS = 5  # seeds of every method in the comparison
CLOSE_SEEDS = 10  # seeds of both methods of a paired comparison whose verdict is close


def check_scenario(scenario: object) -> None:
    """Stop with a ConfigError naming ``scenario`` unless it is one of SCENARIOS."""
    require(scenario in SCENARIOS, "scenario", "one of " + ", ".join(SCENARIOS), scenario)


def base(scenario: str) -> RunConfig:
    """The configuration every method of a scenario starts from: full bias, validation held out, no worker
    scoring."""
    check_scenario(scenario)
    return standard().replace(bias=1.0, eval_workers=0, validation=VALIDATION, **SCENARIOS[scenario])


def trial_config(scenario: str, remedy: str, value: float) -> RunConfig:
    """The configuration of a remedy at grid value ``value`` in a scenario (seed 0, full rounds)."""
    return base(scenario).replace(**REMEDIES[remedy].setting(value))


def rung_rounds(scenario: str) -> int:
    """The rounds every grid value runs before the worse half is dropped."""
    return base(scenario).rounds // RUNG


def score(results: Sequence[RunResult]) -> Estimate:
    """Validation accuracy (percent) over the seeds, each seed's the mean of its last LAST rounds."""
    rounds = int(results[0].config["rounds"])
    window = range(max(1, rounds - LAST + 1), rounds + 1)
    per_seed = [statistics.fmean(v) for v in zip(*(seed_values(results, "val_accuracy", r) for r in window),
                                                  strict=True)]
    return estimate(per_seed, sum(bool(r.diverged) for r in results)).scaled(100)


@dataclass
class Trial:
    """One value of a remedy's grid: its runs at the rung and, where it went on, at full length; ``extension``
    when it was added because the choice sat on an edge."""

    value: float
    rung: list[RunResult]
    full: list[RunResult] | None = None
    extension: bool = False


@dataclass
class Search:
    """A remedy's search in a scenario: its trials in increasing order of value, and the value chosen."""

    remedy: str
    trials: list[Trial]

    @property
    def chosen(self) -> Trial:
        """The continued trial with the best full-length score (ties: the value nearer FedAvg)."""
        full = [t for t in self.trials if t.full is not None]
        grid = REMEDIES[self.remedy].grid
        return max(full, key=lambda t: (score(t.full).mean, grid.toward_fedavg(t.value)))

    @property
    def edge(self) -> str | None:
        """"below" or "above" where the choice is the smallest or largest value tried, else None."""
        if self.chosen is self.trials[0]:
            return "below"
        return "above" if self.chosen is self.trials[-1] else None

    def edge_extension(self) -> float | None:
        """The next value beyond the grid's edge where the choice sits on it, else None."""
        if self.edge is None:
            return None
        tried = {t.value for t in self.trials}
        return next((v for v in getattr(REMEDIES[self.remedy].grid, self.edge) if v not in tried), None)


def _runs(configs: dict[tuple[str, float], RunConfig], **options: object) -> dict[tuple[str, float], list]:
    """Each configuration over the tuning seeds, trained together where missing."""
    jobs = [(c.replace(seed=s), "federated") for c in configs.values() for s in range(TUNING_SEEDS)]
    results = run_many(jobs, allow_divergence=True, **options)
    return {k: results[i * TUNING_SEEDS : (i + 1) * TUNING_SEEDS] for i, k in enumerate(configs)}


def better_half(remedy: str, trials: Sequence[Trial]) -> list[Trial]:
    """The trials of a grid that go on to full length: the better 1/RUNG by the rung's score, ties toward FedAvg."""
    grid = REMEDIES[remedy].grid
    ranked = sorted(trials, key=lambda t: (score(t.rung).mean, grid.toward_fedavg(t.value)), reverse=True)
    return ranked[: math.ceil(len(trials) / RUNG)]


def _trials(scenario: str, values: dict[str, list[float]], extension: bool) -> dict[str, list[Trial]]:
    """New trials of each remedy's values: at the rung (checkpoints kept), then every one continued (an
    extension), or (a grid) only the better half by the rung's score."""
    config = {(m, v): trial_config(scenario, m, v) for m, vs in values.items() for v in vs}
    rung = _runs({k: c.replace(rounds=rung_rounds(scenario)) for k, c in config.items()}, keep_checkpoints=True)
    trials = {m: [Trial(v, rung[(m, v)], extension=extension) for v in vs] for m, vs in values.items()}
    going_on = {m: ts if extension else better_half(m, ts) for m, ts in trials.items()}
    finished = _runs({(m, t.value): config[(m, t.value)] for m, ts in going_on.items() for t in ts},
                     resume_from=rung_rounds(scenario))
    for m, ts in going_on.items():
        for t in ts:
            t.full = finished[(m, t.value)]
    return trials


def search(scenario: str) -> dict[str, Search]:
    """Every tuned remedy's search in a scenario, from the store or trained (all remedies together)."""
    found = {m: Search(m, ts) for m, ts in _trials(
        scenario, {m: list(REMEDIES[m].grid.values) for m in tuned()}, extension=False).items()}
    while extend := {m: [v] for m, s in found.items() if (v := s.edge_extension()) is not None}:
        for m, ts in _trials(scenario, extend, extension=True).items():
            found[m].trials = sorted([*found[m].trials, *ts], key=lambda t: t.value)
    return found


def best_of(series: dict[str, list[RunResult]], family: str) -> str | None:
    """The method of a family (fedcore.remedies) with the highest validation score (``score``: held-out training
    images, never the test set), if any is here."""
    members = [m for m in series if REMEDIES[m].family == family]
    return max(members, key=lambda m: score(series[m]).mean) if members else None


def pairs(series: dict[str, list[RunResult]], methods: Sequence[str]) -> list[tuple[str, str]]:
    """The paired comparisons the book decides: every method against the baseline (``methods[0]``), and every
    remedy built for label skew against the best generic remedy."""
    baseline, generic = methods[0], best_of(series, "generic")
    against = [(m, baseline) for m in methods[1:]]
    if generic is not None:
        against += [(m, generic) for m in methods if REMEDIES[m].family == "label skew"]
    return against


def wanted(series: dict[str, list[RunResult]], methods: Sequence[str]) -> dict[str, int]:
    """The seeds the rules ask for each method, judged on the runs at hand: SEEDS each, so that every method is
    compared with every other on the same seeds; where a verdict of ``pairs`` is close (``Comparison.close``),
    CLOSE_SEEDS for both of its methods."""
    counts = dict.fromkeys(methods, SEEDS)
    for a, b in pairs(series, methods):
        if paired_runs(series[a][:SEEDS], series[b][:SEEDS]).close:
            counts[a] = counts[b] = CLOSE_SEEDS
    return counts


def comparison(scenario: str, methods: Sequence[str], settings: dict[str, dict[str, object]],
               ) -> dict[str, list[RunResult]]:
    """Each method at its setting (``settings``: the search record's choices, ``search_record.chosen``) over the
    seeds ``wanted`` asks for (SEEDS each, then more where a verdict is close), trained together where missing.
    In the book's build the design (fedcore.design) pins each method's seeds instead, and a method whose rules
    would now ask for more says so in the design log."""
    start = base(scenario)
    configs = {m: start.replace(**settings[m]) for m in methods}
    counts = design.pinned(configs)
    if counts is not None:
        series = over_seeds(configs, counts)
        design.note(wanted(series, methods), counts)
        return series
    series = over_seeds(configs, dict.fromkeys(configs, SEEDS))
    series = over_seeds(configs, wanted(series, methods), have=series)
    design.record({m: len(rs) for m, rs in series.items()})
    return series
