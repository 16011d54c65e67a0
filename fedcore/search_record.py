"""The hyperparameter search as a design stage: its committed record, which the book reads and every build
verifies by sampling.

``make design`` runs the search (``fedcore.tuning.search``: every tuned remedy in every scenario) and writes the
record, ``book/search.json``: every tuning run's remedy, scenario, value, seed, rounds, per-round validation
accuracy, diverged flag and run key, and each remedy's choice. The book's tuning pages draw their figures and
tables from it (``searches``) and the remedies pages take their settings from it (``chosen``): nothing of the
search is retrained and no chosen value is typed. Every build retrains a few of the record's runs (``sample``,
drawn from the record's own content, so that another record gets another sample) and stops where one validation
history differs by a bit (``verify``).

A record that no longer fits the code (another grid, base configuration, seeds or rounds) or whose choices do not
follow from its own histories is refused, naming what differs; ``make design`` re-derives it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from fedcore import tuning
from fedcore.config import NUM_CLASSES, RunConfig
from fedcore.errors import ConfigError
from fedcore.remedies import REMEDIES, tuned
from fedcore.results import RunResult
from fedcore.runner import run_many
from fedcore.store import write_atomic
from fedcore.version import engine_fingerprint

FORMAT = 2
RECORD_ENV = "FEDCORE_SEARCH_RECORD"
DEFAULT_RECORD = Path(__file__).resolve().parent.parent / "book" / "search.json"
REDERIVE = "`make design` re-derives the record"
PER_SCENARIO = 2  # runs of each scenario retrained by every build, each of another remedy


class RecordMismatch(Exception):
    """A run of the record, retrained, gave another validation history."""


def record_path() -> Path:
    """The search record: $FEDCORE_SEARCH_RECORD where set, else the repository's ``book/search.json``."""
    text = os.environ.get(RECORD_ENV)
    return Path(text) if text else DEFAULT_RECORD


@dataclass
class RecordedRun(RunResult):
    """A tuning run as the record keeps it: its validation accuracy per round (round 0 the initial model), to
    the round it diverged at where it did."""

    classes: int = NUM_CLASSES

    @property
    def chance(self) -> float:
        return 1 / self.classes


def _grid(remedy: str) -> dict[str, object]:
    """What the record must match of a remedy's definition: its fixed changes and its grid."""
    r = REMEDIES[remedy]
    return {"changes": r.changes, "param": r.grid.param, "values": list(r.grid.values),
            "below": list(r.grid.below), "above": list(r.grid.above)}


def config_of(scenario: str, remedy: str, value: float, seed: int, rounds: int) -> RunConfig:
    """The configuration of one tuning run."""
    return tuning.trial_config(scenario, remedy, value).replace(seed=seed, rounds=rounds)


def _settings(scenario: str) -> dict[str, object]:
    """What the record must match of how a scenario is searched: base configuration, seeds, rounds, window."""
    return {"base": tuning.base(scenario).experiment(), "seeds": list(tuning.TUNING_SEEDS),
            "more_seeds": list(tuning.MORE_SEEDS),
            "rounds": tuning.base(scenario).rounds, "last": tuning.LAST}


def _run_entry(result: RunResult) -> dict[str, object]:
    return {"seed": int(result.config["seed"]), "rounds": int(result.config["rounds"]), "key": result.key,
            "diverged": result.diverged, "val_accuracy": [row["val_accuracy"] for row in result.rounds]}


def _scenario_entry(scenario: str, found: dict[str, tuning.Search]) -> dict[str, object]:
    remedies = {}
    for m, s in found.items():
        trials = [{"value": t.value, "extension": t.extension, "runs": [_run_entry(r) for r in t.runs]}
                  for t in s.trials]
        remedies[m] = {**_grid(m), "chosen": s.chosen.value, "trials": trials}
    return {**_settings(scenario), "remedies": remedies}


def derive() -> dict[str, object]:
    """Run the whole search (from the run store, or trained) and return its record."""
    return {"format": FORMAT,
            "made": {"engine_fingerprint": engine_fingerprint(), "torch": torch.__version__,
                     "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                     "threads": tuning.base("standard").threads,
                     "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "scenarios": {s: _scenario_entry(s, tuning.search(s)) for s in tuning.SCENARIOS}}


def dumps(record: dict[str, object]) -> str:
    """The record as JSON, one run per line (readable diffs when a new record moves a run)."""
    runs: list[str] = []

    def fold(obj: object) -> object:
        if isinstance(obj, dict) and "val_accuracy" in obj:
            runs.append(json.dumps(obj, sort_keys=True))
            return f"@run{len(runs) - 1}@"
        if isinstance(obj, dict):
            return {k: fold(v) for k, v in obj.items()}
        return [fold(v) for v in obj] if isinstance(obj, list) else obj

    text = json.dumps(fold(record), indent=1, sort_keys=True)
    return re.sub(r'"@run(\d+)@"', lambda m: runs[int(m.group(1))], text) + "\n"


def _fail(path: Path, what: str) -> ConfigError:
    return ConfigError(f"search record {path}: {what}; {REDERIVE}", param=RECORD_ENV)


def _recorded(scenario: str, remedy: str, value: float, run: dict[str, object]) -> RecordedRun:
    config = config_of(scenario, remedy, value, int(run["seed"]), int(run["rounds"]))
    rows = [{"round": i, "val_accuracy": float(v)} for i, v in enumerate(run["val_accuracy"])]
    return RecordedRun(kind="federated", key=str(run["key"]), config=dataclasses.asdict(config), versions={},
                       rounds=rows, diverged=run["diverged"])


def _searches(path: Path, scenario: str, entry: dict[str, object]) -> dict[str, tuning.Search]:
    """A scenario's searches rebuilt from its record, checked against the code and against its own choices."""
    for name, want in _settings(scenario).items():
        if entry.get(name) != want:
            raise _fail(path, f"scenario {scenario!r} was searched with {name} {entry.get(name)!r}, the code says "
                              f"{want!r}")
    if sorted(entry["remedies"]) != sorted(tuned()):
        raise _fail(path, f"scenario {scenario!r} holds the remedies {sorted(entry['remedies'])}, the code tunes "
                          f"{sorted(tuned())}")
    found = {}
    for m in tuned():
        e = entry["remedies"][m]
        if {k: e.get(k) for k in _grid(m)} != _grid(m):
            raise _fail(path, f"{m} ({scenario}) was searched on another grid than fedcore.remedies defines")
        trials = [tuning.Trial(float(t["value"]), [_recorded(scenario, m, t["value"], r) for r in t["runs"]],
                               bool(t["extension"])) for t in e["trials"]]
        search = tuning.Search(m, trials)
        if [t.value for t in trials if not t.extension] != list(REMEDIES[m].grid.values):
            raise _fail(path, f"{m} ({scenario}) holds other values of its grid than fedcore.remedies defines")
        seeds = [[int(r.config["seed"]) for r in t.runs] for t in trials]
        allowed = (list(tuning.TUNING_SEEDS), [*tuning.TUNING_SEEDS, *tuning.MORE_SEEDS])
        if any(s not in allowed for s in seeds):
            raise _fail(path, f"{m} ({scenario}) holds runs of other seeds than {allowed[0]} (or {allowed[1]})")
        if search.unsettled() or search.edge_extension() is not None:
            raise _fail(path, f"{m} ({scenario}) stopped before its search was done (a choice on an edge or "
                              "unsettled)")
        if search.chosen.value != e["chosen"]:
            raise _fail(path, f"{m} ({scenario}) records the choice {e['chosen']:g}, its own histories give "
                              f"{search.chosen.value:g}")
        found[m] = search
    return found


@cache
def load(path: Path | None = None) -> dict[str, dict[str, tuning.Search]]:
    """Every scenario's searches from the record (default ``record_path()``), checked; a ConfigError naming the
    record and what is wrong where it is missing, malformed or stale."""
    path = path or record_path()
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _fail(path, f"not readable JSON ({err})") from None
    try:
        if record.get("format") != FORMAT:
            raise _fail(path, f"format {record.get('format')!r}, this code reads {FORMAT}")
        if sorted(record["scenarios"]) != sorted(tuning.SCENARIOS):
            raise _fail(path, f"scenarios {sorted(record['scenarios'])}, the code has {sorted(tuning.SCENARIOS)}")
        return {s: _searches(path, s, record["scenarios"][s]) for s in tuning.SCENARIOS}
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise _fail(path, f"malformed ({type(err).__name__}: {err})") from None


def searches(scenario: str) -> dict[str, tuning.Search]:
    """A scenario's searches as the record holds them: trials in increasing order of value, the choice made."""
    tuning.check_scenario(scenario)
    return load(record_path())[scenario]


def chosen(scenario: str) -> dict[str, dict[str, object]]:
    """Every method's changes to ``tuning.base(scenario)``: the untuned as defined, the tuned at the value the
    record chose."""
    found = searches(scenario)
    return {m: r.setting(found[m].chosen.value if m in found else None) for m, r in REMEDIES.items()}


@dataclass(frozen=True)
class Sampled:
    """One run of the record drawn for retraining."""

    scenario: str
    remedy: str
    value: float
    run: RecordedRun

    @property
    def config(self) -> RunConfig:
        """The configuration of the run, to train again."""
        return config_of(self.scenario, self.remedy, self.value, int(self.run.config["seed"]),
                         int(self.run.config["rounds"]))

    def __str__(self) -> str:
        param = REMEDIES[self.remedy].grid.param
        return (f"{self.remedy} {param}={self.value:g} seed {self.run.config['seed']} ({self.scenario}, "
                f"{self.run.config['rounds']} rounds)")


def sample(found: dict[str, dict[str, tuning.Search]], seed_text: str) -> list[Sampled]:
    """PER_SCENARIO runs of each scenario, each of another remedy while there are others, drawn with a random
    generator seeded by ``seed_text`` (the record's content): another record, another sample."""
    rng = random.Random(hashlib.sha256(seed_text.encode()).hexdigest())
    picked: list[Sampled] = []
    for scenario in sorted(found):
        runs = [Sampled(scenario, m, t.value, r) for m in sorted(found[scenario])
                for t in found[scenario][m].trials for r in t.runs]
        for _ in range(PER_SCENARIO):
            left = [p for p in runs if p not in picked]
            picked.append(rng.choice([p for p in left if p.remedy not in {q.remedy for q in picked}] or left))
    return picked


def verify(picked: list[Sampled], **options: object) -> None:
    """Retrain (or read from the run store, which only this engine's runs enter) each sampled run and compare
    its validation history and divergence with the record's, bit for bit; RecordMismatch naming the first
    that differs."""
    results = run_many([(p.config, "federated") for p in picked], allow_divergence=True, **options)
    for p, result in zip(picked, results, strict=True):
        now, then = result.column("val_accuracy"), p.run.column("val_accuracy")
        if now != then or bool(result.diverged) != bool(p.run.diverged):
            at = next((i for i, (a, b) in enumerate(zip(now, then, strict=False)) if a != b), min(len(now), len(then)))
            raise RecordMismatch(f"{p}, retrained, differs from the search record at round {at} (validation "
                                 f"accuracy {then[at] if at < len(then) else 'absent'} recorded, "
                                 f"{now[at] if at < len(now) else 'absent'} now); {REDERIVE}")


def draw(path: Path | None = None) -> list[Sampled]:
    """Load the record (ConfigError where it does not hold) and draw its sample."""
    path = path or record_path()
    return sample(load(path), path.read_text())


def check(path: Path | None = None, **options: object) -> list[Sampled]:
    """Load the record and verify a sample of it: the runs checked (ConfigError or RecordMismatch otherwise)."""
    picked = draw(path)
    verify(picked, **options)
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the remedies' hyperparameter search and write its record.")
    parser.add_argument("--out", type=Path, default=None, help=f"the record (default: ${RECORD_ENV} or "
                                                                 "book/search.json)")
    args = parser.parse_args()
    out = args.out or record_path()
    start = time.perf_counter()
    try:
        write_atomic(out, dumps(derive()))
        load.cache_clear()
        load(out)
    except ConfigError as err:
        sys.exit(f"python -m fedcore.search_record: error: {err}")
    print(f"search record written to {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
