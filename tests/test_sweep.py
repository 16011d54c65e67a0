import csv

import pytest

from fedcore.cli import main
from fedcore.engine import run_federated
from fedcore.stats import interval

GRID = ["--grid", "bias=0,1", "--grid", "seed=0..2", "--set", "rounds=2", "--set", "local_steps=3", "--processes", "1"]


class Trainer:
    """Trains in this process on the synthetic set, recording each call; ``trouble`` may raise first."""

    def __init__(self, data):
        self.data, self.calls, self.trouble = data, [], None

    def __call__(self, config, progress=True):
        self.calls.append(config)
        if self.trouble:
            self.trouble(config, len(self.calls))
        return run_federated(config, progress=False, data=self.data)


@pytest.fixture
def trained(monkeypatch, toy):
    trainer = Trainer(toy)
    monkeypatch.delenv("FEDCORE_SCHEDULER", raising=False)
    monkeypatch.setattr("fedcore.runner.KINDS", {"federated": trainer})
    return trainer


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--grid", "bias=0,1.5"], ["bias", "1.5", "[0, 1]"]),
        (["--grid", "workers=10,1"], ["workers", "1", ">= 2"]),
        (["--grid", "seed=3..1"], ["seed", "3..1", "a <= b"]),
        (["--set", "biass=1"], ["biass", "not a RunConfig field"]),
        (["--set", "local_epochs=1", "--grid", "local_steps=5"], ["local_epochs/local_steps", "exclusive"]),
    ],
)
def test_a_bad_grid_exits_2_naming_field_value_and_range_before_training(trained, tmp_path, capsys, argv, named):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *argv, "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert all(n in err for n in named), err
    assert trained.calls == [] and not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_sweep_tables_and_resuming_after_an_interruption(trained, tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["sweep", *GRID, "--out", str(out), "--runs-dir", str(runs), "--no-progress"]

    def interrupt_the_third(config, calls):
        if calls == 3:
            raise KeyboardInterrupt

    trained.trouble = interrupt_the_third
    assert main(argv) == 130  # Ctrl-C: the command line's convention
    assert len(list(runs.glob("*.json"))) == 2 and not list(runs.glob(".*")) and not list(out.glob("*"))

    trained.trouble, trained.calls = None, []
    assert main(argv) == 0
    assert len(trained.calls) == 4  # the two stored runs came back without training
    rows = _rows(out / "runs.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert [(r["bias"], r["seed"]) for r in rows] == [(b, s) for b in ("0.0", "1.0") for s in "012"]
    assert {"key", "rounds", "test_accuracy", "test_loss", "best_accuracy"} <= set(rows[0])
    curves = _rows(out / "rounds.csv")
    assert len(curves) == 6 * 3 and {"key", "bias", "seed", "round", "test_accuracy"} <= set(curves[0])
    summary = capsys.readouterr().out
    assert "95% interval" in summary and len([line for line in summary.splitlines() if "+-" in line]) == 2


def test_a_failed_run_is_reported_and_the_rest_go_on(trained, tmp_path, capsys):
    def flaky(config, calls):
        if config.seed == 1 and config.bias == 1.0:
            raise RuntimeError("out of memory")

    trained.trouble = flaky
    code = main(["sweep", *GRID, "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"),
                 "--no-progress"])
    assert code == 1
    statuses = [r["status"] for r in _rows(tmp_path / "out" / "runs.csv")]
    assert statuses == ["ok"] * 4 + ["failed", "ok"]
    assert "failed: bias=1.0, seed=1: RuntimeError: out of memory" in capsys.readouterr().out


def test_interval_is_students_t_over_seeds():
    assert interval([1.0, 2.0, 3.0]) == pytest.approx(4.303 / 3**0.5)
    assert interval([0.5]) != interval([0.5])  # nan: no interval from one seed


def test_an_unreachable_scheduler_stops_the_sweep_with_status_2(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fedcore.executors.CONNECT_TIMEOUT_S", 1.0)
    code = main(["sweep", *GRID, "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "out"),
                 "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 2 and "tcp://127.0.0.1:9" in capsys.readouterr().err
    assert trained.calls == [] and not list((tmp_path / "out").glob("*"))  # checked writable, nothing written


def test_a_grid_leaving_workers_empty_exits_2_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--grid", "workers=10,100000", "--set", "rounds=1", "--out", str(tmp_path / "out"),
              "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert exit_info.value.code == 2
    assert "workers" in capsys.readouterr().err and not list((tmp_path / "runs").glob("*.json"))
