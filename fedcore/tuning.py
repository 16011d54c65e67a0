"""Tuning the remedies in the open: each remedy's grid (fedcore.remedies) at full bias, scored on validation
images held out of the training set (never the test set), in each scenario the book compares.

Every run of a scenario, tuning and comparison alike, holds out the same ``VALIDATION`` training images and
trains on the rest. The tuning runs use seeds of their own (``TUNING_SEEDS``), apart from every seed of the
comparison (those count up from 0), so that no comparison run was selected for. Every value of every grid runs
all the rounds at every tuning seed: on this problem a value's order at half length is a poor guide to its order
at full length (``rank_agreement`` measures it from the same runs, whose first half is the half-length run).
The choice is made on the full-length score, never typed in: per remedy, the value with the highest validation
accuracy averaged over the last ``LAST`` rounds and then over the tuning seeds (a diverged seed counts at
chance); ties go toward FedAvg (``Grid.weaker``). A choice on an edge of the grid extends it by the next value on
that side (``Grid.below``/``above``) until the choice is inside or the extensions run out; where the intervals of
the choice and the runner-up overlap, both run ``MORE_SEEDS`` too and the choice is made again.

The search runs in ``make design``, apart from the book's build: ``fedcore.search_record`` keeps its runs'
validation histories and its choices in the committed record that the book's pages read.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
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
# Seeds of the tuning runs, apart from every comparison seed (a design pins at most design.MAX_SEEDS): three for
# every value, and two more for the chosen value and the runner-up where their validation intervals overlap.
TUNING_SEEDS = (10_001, 10_002, 10_003)
MORE_SEEDS = (10_004, 10_005)
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


def score(results: Sequence[RunResult], at: int | None = None) -> Estimate:
    """Validation accuracy (percent) over the seeds, each seed's the mean of the LAST rounds up to round ``at``
    (default: the last); a seed diverged by then counts at chance."""
    rounds = int(results[0].config["rounds"]) if at is None else at
    window = range(max(1, rounds - LAST + 1), rounds + 1)
    per_seed = [statistics.fmean(v) for v in zip(*(seed_values(results, "val_accuracy", r) for r in window),
                                                  strict=True)]
    diverged = sum(bool(r.diverged) and len(r.rounds) <= rounds for r in results)
    return estimate(per_seed, diverged).scaled(100)


@dataclass
class Trial:
    """One value of a remedy's grid: its runs, all the rounds, at TUNING_SEEDS (and MORE_SEEDS where it was
    unsettled); ``extension`` when it was added because the choice sat on an edge."""

    value: float
    runs: list[RunResult]
    extension: bool = False


@dataclass
class Search:
    """A remedy's search in a scenario: its trials in increasing order of value, and the value chosen."""

    remedy: str
    trials: list[Trial]

    @property
    def chosen(self) -> Trial:
        """The trial with the best score (ties: the value nearer FedAvg)."""
        return self.leader()

    def leader(self, at: int | None = None) -> Trial:
        """The trial with the best score up to round ``at`` (default: all rounds; ties: the value nearer
        FedAvg)."""
        return max(self.trials, key=lambda t: self._rank(t, at))

    def _rank(self, trial: Trial, at: int | None = None) -> tuple[float, float]:
        """A trial's place in the order: its score, rounded so that equal scores over different numbers of seeds
        (all at chance, say) tie exactly, then nearness to FedAvg."""
        return round(score(trial.runs, at).mean, 9), REMEDIES[self.remedy].grid.toward_fedavg(trial.value)

    @property
    def edge(self) -> str | None:
        """"below" or "above" where the choice is the smallest or largest value tried, else None."""
        if self.chosen is self.trials[0]:
            return "below"
        return "above" if self.chosen is self.trials[-1] else None

    def unsettled(self) -> list[Trial]:
        """The chosen trial and the runner-up, those of them still at TUNING_SEEDS, where the 95% intervals of
        their scores overlap; else none."""
        if len(self.trials) < 2:
            return []
        chosen = self.chosen
        runner_up = max((t for t in self.trials if t is not chosen), key=self._rank)
        if score(chosen.runs).low > score(runner_up.runs).high:
            return []
        return [t for t in (chosen, runner_up) if len(t.runs) == len(TUNING_SEEDS)]

    def edge_extension(self) -> float | None:
        """The next value beyond the grid's edge where the choice sits on it, else None."""
        if self.edge is None:
            return None
        tried = {t.value for t in self.trials}
        return next((v for v in getattr(REMEDIES[self.remedy].grid, self.edge) if v not in tried), None)


def _runs(scenario: str, trials: list[tuple[str, float]], seeds: Sequence[int]) -> Iterator[list[RunResult]]:
    """The runs of each (remedy, value) of ``trials`` at ``seeds``, in order, trained together where missing."""
    jobs = [(trial_config(scenario, m, v).replace(seed=s), "federated") for m, v in trials for s in seeds]
    results = iter(run_many(jobs, allow_divergence=True))
    return ([next(results) for _ in seeds] for _ in trials)


def _trials(scenario: str, values: dict[str, list[float]], extension: bool) -> dict[str, list[Trial]]:
    """New trials of each remedy's values, every one at every tuning seed and all the rounds."""
    runs = _runs(scenario, [(m, v) for m, vs in values.items() for v in vs], TUNING_SEEDS)
    return {m: [Trial(v, next(runs), extension) for v in vs] for m, vs in values.items()}


def _more_seeds(scenario: str, trials: dict[str, list[Trial]]) -> None:
    """Each trial's runs at MORE_SEEDS added to it."""
    runs = _runs(scenario, [(m, t.value) for m, ts in trials.items() for t in ts], MORE_SEEDS)
    for ts in trials.values():
        for t in ts:
            t.runs += next(runs)


def search(scenario: str) -> dict[str, Search]:
    """Every tuned remedy's search in a scenario, from the store or trained (all remedies together): the grid,
    then edge extensions while a choice sits on an edge, and more seeds while a choice is unsettled."""
    found = {m: Search(m, ts) for m, ts in _trials(
        scenario, {m: list(REMEDIES[m].grid.values) for m in tuned()}, extension=False).items()}
    while True:
        if extend := {m: [v] for m, s in found.items() if (v := s.edge_extension()) is not None}:
            for m, ts in _trials(scenario, extend, extension=True).items():
                found[m].trials = sorted([*found[m].trials, *ts], key=lambda t: t.value)
        elif more := {m: ts for m, s in found.items() if (ts := s.unsettled())}:
            _more_seeds(scenario, more)
        else:
            return found


def rank_agreement(search: Search, at: int) -> float:
    """Spearman's rank correlation, over a remedy's trials, between the scores up to round ``at`` and at full
    length (1: a search stopped at round ``at`` would rank the values alike); nan where either is constant."""
    def ranks(xs: list[float]) -> list[float]:
        order = sorted(xs)
        return [order.index(x) + (order.count(x) - 1) / 2 for x in xs]

    early = ranks([score(t.runs, at).mean for t in search.trials])
    full = ranks([score(t.runs).mean for t in search.trials])
    try:
        return statistics.correlation(early, full)
    except statistics.StatisticsError:
        return math.nan


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
