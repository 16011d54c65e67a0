import pytest

from fedcore import design, experiments, tuning
from fedcore.config import ConfigError
from fedcore.experiments import GRID_SIZE, REMEDIES
from fedcore.results import RunResult


def fake(final: float, rounds: int = 10, diverged_at: int | None = None) -> RunResult:
    """A run whose validation accuracy is ``final`` over its last rounds (rows stop at a divergence)."""
    last = rounds if diverged_at is None else diverged_at - 1
    rows = [{"round": r, "val_accuracy": final if r > rounds - tuning.LAST else 0.5, "test_accuracy": final,
             "predicted": [0] * 10} for r in range(last + 1)]
    return RunResult("federated", "k", {"rounds": rounds}, rounds=rows,
                     diverged=None if diverged_at is None else f"test loss became nan at round {diverged_at}")


def test_every_tuned_remedy_has_the_same_number_of_values_and_every_run_holds_out_validation():
    assert tuning.tuned() == ["fedavgm", "fedprox", "fedadam", "scaffold", "lr decay"]
    assert all(len(REMEDIES[m]) == GRID_SIZE for m in tuning.tuned())
    for scenario in tuning.SCENARIOS:
        configs = tuning.candidates(scenario)
        assert len(configs) == GRID_SIZE * len(tuning.tuned())
        assert {c.validation for c in configs.values()} == {tuning.VALIDATION}
        assert all(c.bias == 1.0 and c.eval_workers == 0 for c in configs.values())
    assert tuning.base("heavy").local_steps == 188 and tuning.base("heavy").rounds == 20
    with pytest.raises(ConfigError, match="scenario must be one of standard, heavy"):
        tuning.base("light")


def test_score_averages_the_last_rounds_and_counts_a_diverged_seed_at_chance():
    est = tuning.score([fake(0.9), fake(0.7)])
    assert est.mean == pytest.approx(80.0) and est.n == 2 and est.diverged == 0
    broken = tuning.score([fake(0.9), fake(0.9, diverged_at=3)])
    assert broken.mean == pytest.approx((90.0 + 10.0) / 2) and broken.diverged == 1


def test_the_chosen_values_come_from_the_tuning_runs(monkeypatch):
    best = {m: (i + 1) % GRID_SIZE for i, m in enumerate(tuning.tuned())}
    runs = {(m, i): [fake(0.9 if i == best[m] else 0.6)] * 2 for m in tuning.tuned() for i in range(GRID_SIZE)}
    monkeypatch.setattr(tuning, "tuning_runs", lambda scenario: runs)
    chosen = tuning.chosen("standard")
    assert set(chosen) == set(REMEDIES)
    for m in tuning.tuned():
        assert chosen[m] == REMEDIES[m][best[m]]
    assert chosen["fedavg"] == {} and chosen["shared 5%"] == {"shared_fraction": 0.05}
    tie = {k: [fake(0.8)] * 2 for k in runs}
    assert set(tuning.choose(tie).values()) == {0}  # ties go to the first value of the grid


def test_a_grid_value_reads_as_words():
    assert tuning.setting({"strategy": "fedavgm", "server_lr": 0.5, "server_momentum": 0.9}) == \
        "server_lr 0.5, server_momentum 0.9"
    assert tuning.setting({}) == "standard settings"


def fake_training(monkeypatch, finals: dict[str, list[float]]) -> list[tuple[str, int]]:
    """Replace training: a run of method m (by strategy) and seed s ends at finals[m][s] (0.8 beyond the list);
    returns the (method, seed) pairs asked for, in order."""
    asked = []

    def run_many(jobs, **kwargs):
        asked.extend((c.strategy, c.seed) for c, _ in jobs)
        return [fake(finals[c.strategy][c.seed] if c.seed < len(finals[c.strategy]) else 0.8) for c, _ in jobs]

    monkeypatch.setattr(experiments, "run_many", run_many)
    monkeypatch.setattr(tuning, "chosen", lambda scenario: {m: grid[0] for m, grid in REMEDIES.items()})
    return asked


def test_every_method_is_topped_up_to_the_baselines_seeds(monkeypatch):
    spread = [0.70, 0.80, 0.90]  # sd 10 points: the spread rule asks for 5 seeds
    asked = fake_training(monkeypatch, {"fedavg": spread, "scaffold": spread, "fedadam": [0.8] * 3})
    series = tuning.comparison("standard", ["fedavg", "scaffold", "fedadam"])
    assert {m: len(rs) for m, rs in series.items()} == {"fedavg": 5, "scaffold": 5, "fedadam": 5}
    first = [(m, s) for m in ("fedavg", "scaffold", "fedadam") for s in range(3)]
    assert asked == [*first, *[(m, s) for m in ("fedavg", "scaffold", "fedadam") for s in (3, 4)]]


def test_a_close_verdict_runs_the_remedy_and_the_baseline_on_more_seeds(monkeypatch):
    fedavg = [0.80, 0.82, 0.81, 0.79, 0.80]
    finals = {"fedavg": fedavg, "scaffold": [0.83, 0.84, 0.82, 0.80, 0.86],  # +2.6 points, interval 0.03 to 5.2
              "fedadam": [a + 0.10 + 0.001 * i for i, a in enumerate(fedavg)]}  # +10 points, clearly
    finals["fedavg"][1] = 0.86  # sd over the first three above 2 points: five seeds for the baseline
    finals["scaffold"] = [a + d for a, d in zip(finals["fedavg"], [0.03, 0.02, 0.01, 0.01, 0.06], strict=True)]
    asked = fake_training(monkeypatch, finals)
    series = tuning.comparison("standard", ["fedavg", "scaffold", "fedadam"])
    n = tuning.CLOSE_SEEDS
    assert {m: len(rs) for m, rs in series.items()} == {"fedavg": n, "scaffold": n, "fedadam": 5}
    assert asked[-2 * (n - 5):] == [(m, s) for m in ("fedavg", "scaffold") for s in range(5, n)]


def test_in_the_book_the_design_pins_each_methods_seeds_and_logs_what_the_rules_would_add(monkeypatch, tmp_path):
    spread = [0.70, 0.80, 0.90]  # the spread rule would ask for 5 seeds of FedAvg, so of every method
    asked = fake_training(monkeypatch, {"fedavg": spread, "scaffold": spread, "fedadam": [0.8] * 4})
    path, log = tmp_path / "design.yml", tmp_path / "design.log"
    path.write_text("remedies: {fedavg: 3, scaffold: 3, fedadam: 4}\n")
    monkeypatch.setenv(design.DESIGN_ENV, str(path))
    monkeypatch.setenv(design.PAGE_ENV, "remedies")
    monkeypatch.setenv(design.LOG_ENV, str(log))
    series = tuning.comparison("standard", ["fedavg", "scaffold", "fedadam"])
    assert {m: len(rs) for m, rs in series.items()} == {"fedavg": 3, "scaffold": 3, "fedadam": 4}
    assert sorted(asked) == sorted([(m, s) for m in ("fedavg", "scaffold") for s in range(3)]
                                   + [("fedadam", s) for s in range(4)])
    assert log.read_text().splitlines() == [
        f"remedies: {m} runs the {n} seeds the design pins; its rule would now propose 5"
        for m, n in (("fedavg", 3), ("scaffold", 3), ("fedadam", 4))]
