"""The search record: written by the design stage, read by the book's pages, refused when stale or doctored, and
verified by retraining a sample of its runs."""

import json

import pytest

from fedcore import search_record, tuning
from fedcore.config import ConfigError
from fedcore.remedies import REMEDIES, Grid, Remedy
from fedcore.results import RunResult

# Two made-up remedies (edges without extensions), so that the search is small.
TOYS = {"prox": Remedy("Prox", "generic", {"strategy": "fedprox"}, Grid("mu", (0.001, 0.01, 0.1, 1.0), (), (), "t")),
        "decay": Remedy("Decay", "generic", {}, Grid("lr_decay", (0.8, 0.9, 0.95, 0.99), (), (), "t"))}


def use_toys(monkeypatch, scenarios: dict[str, dict[str, object]] | None = None, toys: tuple[str, ...] = tuple(TOYS),
             ) -> None:
    remedies = {"fedavg": REMEDIES["fedavg"], **{m: TOYS[m] for m in toys}}
    for module in (tuning, search_record):
        monkeypatch.setattr(module, "REMEDIES", remedies)
        monkeypatch.setattr(module, "tuned", lambda: list(toys))
    if scenarios is not None:
        monkeypatch.setattr(tuning, "SCENARIOS", scenarios)
    search_record.load.cache_clear()


def fake_runs(monkeypatch) -> None:
    """Training replaced: a run's validation accuracy climbs to a value set by its setting and seed."""

    def run_many(jobs, allow_divergence, **options):
        out = []
        for c, _ in jobs:
            top = 0.5 + 0.1 * (c.mu if c.strategy == "fedprox" else c.lr_decay) + 0.01 * c.seed
            rows = [{"round": r, "val_accuracy": top * r / c.rounds} for r in range(c.rounds + 1)]
            out.append(RunResult("federated", c.key(), {"seed": c.seed, "rounds": c.rounds}, versions={}, rounds=rows))
        return out

    monkeypatch.setattr(tuning, "run_many", run_many)


def drop_a_value(trials: list[dict]) -> None:
    """The grid's second value gone from the record, as if it had never run."""
    trials.pop(1)


def write(path, record) -> None:
    path.write_text(search_record.dumps(record))
    search_record.load.cache_clear()


def test_the_record_holds_every_run_one_per_line_and_reads_back_as_the_search(monkeypatch, tmp_path):
    use_toys(monkeypatch)
    fake_runs(monkeypatch)
    record = search_record.derive()
    path = tmp_path / "search.json"
    write(path, record)
    text = path.read_text()
    runs = [line for line in text.splitlines() if '"val_accuracy"' in line]
    per_scenario = {s: sum(len(t["runs"]) for e in record["scenarios"][s]["remedies"].values() for t in e["trials"])
                    for s in tuning.SCENARIOS}
    assert len(runs) == sum(per_scenario.values())  # one line each
    assert json.loads(text) == record
    found = search_record.load(path)
    for scenario in tuning.SCENARIOS:
        live = tuning.search(scenario)
        for m in TOYS:
            assert [t.value for t in found[scenario][m].trials] == [t.value for t in live[m].trials]
            assert found[scenario][m].chosen.value == live[m].chosen.value == (1.0 if m == "prox" else 0.99)
            assert [len(t.runs) for t in found[scenario][m].trials] == ([3, 3, 3, 3] if m == "prox" else [3, 3, 5, 5])
            assert [r.column("val_accuracy") for r in found[scenario][m].chosen.runs] == \
                [r.column("val_accuracy") for r in live[m].chosen.runs]
    monkeypatch.setenv(search_record.RECORD_ENV, str(path))
    assert search_record.chosen("heavy")["prox"] == {"strategy": "fedprox", "mu": 1.0}
    assert search_record.chosen("heavy")["fedavg"] == {}


@pytest.mark.parametrize(("doctor", "message"), [
    (lambda r: r["scenarios"]["standard"]["remedies"]["prox"].update(chosen=0.1), "its own histories give 1"),
    (lambda r: r["scenarios"]["heavy"]["remedies"]["decay"].update(values=[0.5, 0.9, 0.95, 0.99]), "another grid"),
    (lambda r: r["scenarios"]["heavy"].update(seeds=[0, 1, 2]), "searched with seeds"),
    (lambda r: r["scenarios"]["standard"]["base"].update(lr=0.1), "searched with base"),
    (lambda r: r["scenarios"].pop("heavy"), "scenarios"),
    (lambda r: r.update(format=0), "format 0"),
    (lambda r: r["scenarios"]["standard"]["remedies"]["prox"]["trials"][0].pop("runs"), "malformed"),
    (lambda r: drop_a_value(r["scenarios"]["standard"]["remedies"]["prox"]["trials"]), "other values of its grid"),
    (lambda r: r["scenarios"]["heavy"]["remedies"]["decay"]["trials"][2]["runs"][1].update(seed=1),
     "runs of other seeds"),
    (lambda r: [t["runs"].__delitem__(slice(3, None)) for t in r["scenarios"]["heavy"]["remedies"]["decay"]["trials"]],
     "stopped before its search was done"),
])
def test_a_stale_or_doctored_record_is_refused_naming_what_differs(monkeypatch, tmp_path, doctor, message):
    use_toys(monkeypatch)
    fake_runs(monkeypatch)
    record = search_record.derive()
    doctor(record)
    path = tmp_path / "search.json"
    write(path, record)
    with pytest.raises(ConfigError, match=message) as err:
        search_record.load(path)
    assert str(path) in str(err.value) and "make design" in str(err.value)


def test_a_missing_or_broken_record_is_one_error(tmp_path):
    search_record.load.cache_clear()
    for text in (None, "{not json", "[1, 2]"):
        path = tmp_path / "search.json"
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text)
        search_record.load.cache_clear()
        with pytest.raises(ConfigError, match="make design"):
            search_record.load(path)


def test_the_sample_covers_both_scenarios_on_distinct_remedies_and_follows_the_record(monkeypatch):
    found = search_record.load(search_record.DEFAULT_RECORD)  # the committed record
    text = search_record.DEFAULT_RECORD.read_text()
    picked = search_record.sample(found, text)
    assert [p.scenario for p in picked] == [s for s in sorted(tuning.SCENARIOS)
                                            for _ in range(search_record.PER_SCENARIO)]
    assert len({p.remedy for p in picked}) == len(picked)
    assert all(p.run.config["rounds"] == tuning.base(p.scenario).rounds for p in picked)
    assert [str(p) for p in search_record.sample(found, text)] == [str(p) for p in picked]  # the same record
    others = {tuple(str(p) for p in search_record.sample(found, text + " " * i)) for i in range(1, 20)}
    assert len(others) > 1  # another record, another sample


def test_a_record_is_verified_by_retraining_and_a_doctored_history_fails_naming_the_run(monkeypatch, tmp_path):
    # Real MNIST, tiny runs: the search trains, the record is written, an empty store retrains the sample.
    use_toys(monkeypatch, {"standard": {"rounds": 2, "local_steps": 2},
                           "heavy": {"rounds": 2, "local_steps": 3, "momentum": 0.9}}, toys=("prox",))
    monkeypatch.setenv("FEDCORE_RUNS_DIR", str(tmp_path / "design-runs"))
    path = tmp_path / "search.json"
    write(path, search_record.derive())
    monkeypatch.setenv("FEDCORE_RUNS_DIR", str(tmp_path / "build-runs"))
    picked = search_record.check(path, progress=False)
    assert len(picked) == 4 and len(list((tmp_path / "build-runs").glob("*.json"))) == 4  # retrained, equal

    record = json.loads(path.read_text())
    first = picked[0]
    trial = next(t for t in record["scenarios"][first.scenario]["remedies"][first.remedy]["trials"]
                 if t["value"] == first.value)
    next(r for r in trial["runs"] if r["seed"] == first.run.config["seed"])["val_accuracy"][0] += 1e-12
    write(path, record)  # one bit of the initial model's score (outside the choice's window)
    trial = next(t for t in search_record.load(path)[first.scenario][first.remedy].trials if t.value == first.value)
    doctored = next(r for r in trial.runs if r.config["seed"] == first.run.config["seed"])
    with pytest.raises(search_record.RecordMismatch, match="make design") as err:
        search_record.verify([search_record.Sampled(first.scenario, first.remedy, first.value, doctored)],
                             progress=False)
    assert f"{first}, retrained, differs from the search record at round 0" in str(err.value)
