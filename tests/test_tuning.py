"""Tuning on validation data: grids, full-length trials, rank agreement, edge extensions, and the comparison's
seeds."""

import dataclasses

import pytest

from fedcore import design, experiments, tuning
from fedcore.config import ConfigError
from fedcore.remedies import REMEDIES, Grid, Remedy, tuned
from fedcore.results import RunResult


def fake(final: float | tuple[float, float], rounds: int = 10, diverged_at: int | None = None,
         seed: int = 0) -> RunResult:
    """A run whose validation accuracy is ``final`` over its last rounds (rows stop at a divergence); ``final`` a
    pair (half, full): ``half`` over the last rounds up to round rounds // 2 as well."""
    half, full = final if isinstance(final, tuple) else (0.5, final)
    last = rounds if diverged_at is None else diverged_at - 1

    def val(r: int) -> float:
        return full if r > rounds - tuning.LAST else half if rounds // 2 - tuning.LAST < r <= rounds // 2 else 0.5

    rows = [{"round": r, "val_accuracy": val(r), "test_accuracy": full, "predicted": [0] * 10}
            for r in range(last + 1)]
    return RunResult("federated", "k", {"rounds": rounds, "seed": seed}, rounds=rows,
                     diverged=None if diverged_at is None else f"test loss became nan at round {diverged_at}")


def test_every_tuned_remedy_has_a_grid_of_four_values_or_more_and_every_run_holds_out_validation():
    assert tuned() == ["fedavgm", "fedprox", "fedadam", "scaffold", "lr decay", "fedrs", "fedlc", "fedntd", "fedaws"]
    assert all(len(REMEDIES[m].grid.values) >= 4 and REMEDIES[m].grid.source for m in tuned())
    for scenario in tuning.SCENARIOS:
        start = tuning.base(scenario)
        assert start.validation == tuning.VALIDATION and start.bias == 1.0 and start.eval_workers == 0
        for remedy in REMEDIES.values():
            value = remedy.grid.values[0] if remedy.grid else None
            start.replace(**remedy.setting(value))  # every setting is a valid configuration
    assert tuning.base("heavy").local_steps == 188 and tuning.base("heavy").rounds == 20
    assert len(tuning.TUNING_SEEDS) >= 3 and min(tuning.TUNING_SEEDS) > design.MAX_SEEDS  # apart from the comparison's
    assert REMEDIES["fedrs"].grid.values[-2:] == (0.95, 0.99)  # toward FedAvg's alpha 1
    with pytest.raises(ConfigError, match="scenario must be one of standard, heavy"):
        tuning.base("light")


def test_a_grid_must_be_increasing_with_its_extensions():
    Grid("x", (1, 2, 3, 4), (0.5,), (5,), "ours")
    for values, below, above in [((1, 2, 3), (), ()), ((1, 3, 2, 4), (), ()), ((1, 2, 3, 4), (2,), ()),
                                 ((1, 2, 3, 4), (), (4,))]:
        with pytest.raises(ValueError, match="at least 4 values, increasing"):
            Grid("x", values, below, above, "ours")


def test_score_averages_the_last_rounds_and_counts_a_diverged_seed_at_chance():
    est = tuning.score([fake(0.9), fake(0.7)])
    assert est.mean == pytest.approx(80.0) and est.n == 2 and est.diverged == 0
    broken = tuning.score([fake(0.9), fake(0.9, diverged_at=3)])
    assert broken.mean == pytest.approx((90.0 + 10.0) / 2) and broken.diverged == 1


# A remedy tuned in these tests: a made-up grid, with extensions on both sides.
TOY = Remedy("Toy", "generic", {"strategy": "fedprox"}, Grid("mu", (0.01, 0.1, 1.0, 10.0), (0.001, 0.0001), (100.0,),
                                                                  "made up"))


def fake_search(monkeypatch, accuracy) -> list[tuple[float, int, dict]]:
    """Tuning with one remedy, TOY, whose run at mu and r rounds scores accuracy(mu, r); returns the calls made
    (mu, rounds, options) in order."""
    monkeypatch.setattr(tuning, "REMEDIES", {"fedavg": REMEDIES["fedavg"], "toy": TOY})
    monkeypatch.setattr(tuning, "tuned", lambda: ["toy"])
    calls = []

    def run_many(jobs, allow_divergence, **options):
        calls.extend((c.mu, c.rounds, options) for c, _ in jobs)
        return [fake(accuracy(c.mu, c.rounds), rounds=c.rounds, seed=c.seed) for c, _ in jobs]

    monkeypatch.setattr(tuning, "run_many", run_many)
    return calls


def test_every_value_runs_all_rounds_at_every_tuning_seed_and_the_choice_is_the_full_length_leader(monkeypatch):
    # At half length 0.1 leads; at full length 1 overtakes it: the choice, and a rank agreement below 1.
    half = {0.01: 0.5, 0.1: 0.8, 1.0: 0.7, 10.0: 0.6}
    full = {0.01: 0.5, 0.1: 0.82, 1.0: 0.9, 10.0: 0.6}
    calls = fake_search(monkeypatch, lambda mu, r: (half[mu], full[mu]))
    found = tuning.search("standard")["toy"]
    assert [t.value for t in found.trials] == [0.01, 0.1, 1.0, 10.0]
    assert calls == [(mu, 50, {}) for mu in (0.01, 0.1, 1.0, 10.0) for _ in tuning.TUNING_SEEDS]
    assert [[r.config["seed"] for r in t.runs] for t in found.trials] == [list(tuning.TUNING_SEEDS)] * 4
    assert found.chosen.value == 1.0 and found.leader(25).value == 0.1 and found.edge is None
    assert tuning.rank_agreement(found, 25) == pytest.approx(0.8)  # ranks 1 4 3 2 against 1 3 4 2
    assert tuning.rank_agreement(found, 50) == pytest.approx(1.0)


def test_a_score_up_to_a_round_counts_a_seed_diverged_by_then_at_chance():
    late = fake(0.9, rounds=50, diverged_at=40)
    assert tuning.score([late], at=25).diverged == 0 and tuning.score([late]).diverged == 1
    assert tuning.score([late]).mean == pytest.approx(10.0)


def test_a_choice_on_an_edge_extends_the_grid_until_it_is_inside_or_the_extensions_run_out(monkeypatch):
    accuracy = {0.0001: 0.70, 0.001: 0.95, 0.01: 0.9, 0.1: 0.8, 1.0: 0.6, 10.0: 0.5}  # best below the grid
    calls = fake_search(monkeypatch, lambda mu, r: accuracy[mu])
    found = tuning.search("standard")["toy"]
    assert [t.value for t in found.trials] == [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0]
    assert [t.value for t in found.trials if t.extension] == [0.0001, 0.001]
    assert found.chosen.value == 0.001 and found.edge_extension() is None  # inside now
    assert len(calls) == len(tuning.TUNING_SEEDS) * (4 + 2)  # the grid and two extensions, all at full length

    fake_search(monkeypatch, lambda mu, r: {100.0: 0.99}.get(mu, mu / 100))  # best at the top, beyond it nothing
    found = tuning.search("standard")["toy"]
    assert found.chosen.value == 100.0 and found.edge_extension() is None and found.edge == "above"


def test_ties_go_toward_fedavg_on_the_side_the_grid_names(monkeypatch):
    fake_search(monkeypatch, lambda mu, r: 0.1)  # every value diverges alike: the tie rule decides
    found = tuning.search("standard")["toy"]
    assert found.chosen.value == min(t.value for t in found.trials) == 0.0001  # mu: weaker below
    monkeypatch.setitem(tuning.REMEDIES, "toy", dataclasses.replace(TOY, grid=dataclasses.replace(TOY.grid,
                                                                                                  weaker="above")))
    found = tuning.search("standard")["toy"]
    assert found.chosen.value == max(t.value for t in found.trials) == 100.0  # weaker above: the largest
    assert REMEDIES["fedrs"].grid.weaker == REMEDIES["lr decay"].grid.weaker == "above"  # alpha 1, factor 1: FedAvg
    assert all(REMEDIES[m].grid.weaker == "below" for m in tuned() if m not in ("fedrs", "lr decay"))
    with pytest.raises(ValueError, match="weaker must be"):
        Grid("mu", (1.0, 2.0, 3.0, 4.0), (), (), "made up", weaker="sideways")


def test_a_remedy_reads_as_its_setting():
    assert REMEDIES["fedavgm"].setting(0.3) == {"strategy": "fedavgm", "server_momentum": 0.9, "server_lr": 0.3}
    assert REMEDIES["shared 5%"].setting() == {"shared_fraction": 0.05}
    from fedcore.remedies import setting_text

    assert setting_text({"strategy": "fedavgm", "server_lr": 0.5, "server_momentum": 0.9}) == \
        "server_lr 0.5, server_momentum 0.9"
    assert setting_text({}) == "standard settings"


def fake_training(monkeypatch, finals: dict[str, list[float]]) -> list[tuple[str, int]]:
    """Replace training: a run of method m (by strategy) and seed s ends at finals[m][s] (0.8 beyond the list);
    returns the (method, seed) pairs asked for, in order."""
    asked = []

    def run_many(jobs, **kwargs):
        asked.extend((c.strategy, c.seed) for c, _ in jobs)
        return [fake(finals[c.strategy][c.seed] if c.seed < len(finals[c.strategy]) else 0.8) for c, _ in jobs]

    monkeypatch.setattr(experiments, "run_many", run_many)
    return asked


# Every method's setting at the first value of its grid (the comparison takes the settings the record chose).
SETTINGS = {m: r.setting(r.grid.values[0] if r.grid else None) for m, r in REMEDIES.items()}


def test_every_method_runs_five_seeds(monkeypatch):
    asked = fake_training(monkeypatch, {"fedavg": [0.7, 0.8, 0.9], "scaffold": [0.7, 0.8, 0.9], "fedadam": [0.8] * 3})
    series = tuning.comparison("standard", ["fedavg", "scaffold", "fedadam"], SETTINGS)
    assert {m: len(rs) for m, rs in series.items()} == dict.fromkeys(("fedavg", "scaffold", "fedadam"), 5)
    assert asked == [(m, s) for m in ("fedavg", "scaffold", "fedadam") for s in range(5)]


def test_a_close_verdict_runs_both_methods_on_more_seeds(monkeypatch):
    fedavg = [0.80, 0.86, 0.81, 0.79, 0.80]
    finals = {"fedavg": fedavg,
              "scaffold": [a + d for a, d in zip(fedavg, [0.03, 0.02, 0.01, 0.01, 0.06], strict=True)],  # close
              "fedadam": [a + 0.10 + 0.001 * i for i, a in enumerate(fedavg)],  # +10 points, clearly
              "fedrs": [a + 0.10 for a in fedavg]}  # clearly above FedAvg, but barely above FedAdam: close
    finals["fedrs"] = [a + d for a, d in zip(finals["fedadam"], [0.03, 0.02, 0.01, 0.01, 0.06], strict=True)]
    asked = fake_training(monkeypatch, finals)
    series = tuning.comparison("standard", ["fedavg", "scaffold", "fedadam", "fedrs"], SETTINGS)
    n = tuning.CLOSE_SEEDS
    assert {m: len(rs) for m, rs in series.items()} == {"fedavg": n, "scaffold": n, "fedadam": n, "fedrs": n}
    assert sorted(asked[4 * 5:]) == sorted((m, s) for m in ("fedavg", "scaffold", "fedadam", "fedrs")
                                           for s in range(5, n))


def test_in_the_book_the_design_pins_each_methods_seeds_and_logs_what_the_rules_would_add(monkeypatch, tmp_path):
    fedavg = [0.80, 0.86, 0.81, 0.79, 0.80]
    asked = fake_training(monkeypatch, {"fedavg": fedavg, "scaffold": [a + d for a, d in zip(
        fedavg, [0.03, 0.02, 0.01, 0.01, 0.06], strict=True)], "fedadam": [0.8] * 5})
    path, log = tmp_path / "design.yml", tmp_path / "design.log"
    path.write_text("remedies: {fedavg: 5, scaffold: 5, fedadam: 6}\n")
    monkeypatch.setenv(design.DESIGN_ENV, str(path))
    monkeypatch.setenv(design.PAGE_ENV, "remedies")
    monkeypatch.setenv(design.LOG_ENV, str(log))
    series = tuning.comparison("standard", ["fedavg", "scaffold", "fedadam"], SETTINGS)
    assert {m: len(rs) for m, rs in series.items()} == {"fedavg": 5, "scaffold": 5, "fedadam": 6}
    assert sorted(asked) == sorted([(m, s) for m in ("fedavg", "scaffold") for s in range(5)]
                                   + [("fedadam", s) for s in range(6)])
    assert log.read_text().splitlines() == [
        f"remedies: {m} runs the 5 seeds the design pins; its rule would now propose {tuning.CLOSE_SEEDS}"
        for m in ("fedavg", "scaffold")]


def test_where_the_choice_and_the_runner_up_overlap_both_run_more_seeds_and_the_choice_is_made_again(monkeypatch):
    # 0.1 and 1 score alike on the first seeds; on the two more seeds 1 pulls ahead. 0.01 and 10 stay at three.
    def accuracy(mu: float, seed: int) -> float:
        extra = seed in tuning.MORE_SEEDS
        return {0.01: 0.5, 0.1: 0.80, 1.0: 0.95 if extra else 0.80, 10.0: 0.6}[mu] + 0.01 * (seed % 2)

    monkeypatch.setattr(tuning, "REMEDIES", {"fedavg": REMEDIES["fedavg"], "toy": dataclasses.replace(
        TOY, grid=dataclasses.replace(TOY.grid, below=(), above=()))})
    monkeypatch.setattr(tuning, "tuned", lambda: ["toy"])
    monkeypatch.setattr(tuning, "run_many", lambda jobs, allow_divergence: [
        fake(accuracy(c.mu, c.seed), rounds=c.rounds, seed=c.seed) for c, _ in jobs])
    found = tuning.search("standard")["toy"]
    assert {t.value: len(t.runs) for t in found.trials} == {0.01: 3, 0.1: 5, 1.0: 5, 10.0: 3}
    assert [r.config["seed"] for r in found.trials[2].runs] == [*tuning.TUNING_SEEDS, *tuning.MORE_SEEDS]
    assert found.chosen.value == 1.0 and found.unsettled() == []
