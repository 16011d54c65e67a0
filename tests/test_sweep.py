import csv
import time

import pytest

from fedcore import sweep
from fedcore.cli import main
from fedcore.config import ConfigError
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


def test_a_diverged_run_exits_1_after_writing_the_tables(trained, tmp_path, capsys):
    code = main(["sweep", "--grid", "lr=0.05,1e30", "--set", "rounds=2", "--set", "local_steps=2", "--processes",
                 "1", "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 1
    assert [r["status"] for r in _rows(tmp_path / "out" / "runs.csv")] == ["ok", "diverged"]
    assert "diverged: lr=1e+30" in capsys.readouterr().out and (tmp_path / "out" / "rounds.csv").is_file()


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


def _refused(capsys, argv, tmp_path):
    """The sweep's one error line (exit 2), after checking that nothing was trained or created."""
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *argv, "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m fedcore sweep: error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name in ("out", "runs")) == []
    return err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--set", "lr=[0.1,0.2]"], "lr must be a finite number; got '[0.1,0.2]'"),
        (["--set", "bias=abc"], "bias must be a finite number; got 'abc'"),
        (["--grid", "lr=nan,0.1"], "lr must be a finite number; got 'nan'"),
        (["--set", "rounds=1.5"], "rounds must be an integer; got '1.5'"),
        (["--grid", "bias=0..1"], "bias must be swept by a list of values"),
        (["--set", "bias=0.3", "--grid", "bias=1"], "bias must be given once, fixed or swept"),
        (["--set", "rounds=1", "--set", "rounds=2"], "rounds must be given once"),
        (["--grid", "seed=0..100000"], "grid must have at most 10,000 runs (--max-runs); got 100,001"),
        (["--grid", "seed=0..10000000000", "--grid", "bias=0,1"], "got 20,000,000,002 (10,000,000,001 seed x 2 bias)"),
        (["--grid", "seed=0..20", "--max-runs", "20"], "got 21"),
        (["--processes", "-1"], "argument --processes: must be an integer > 0; got '-1'"),
        (["--processes", "0"], "argument --processes: must be an integer > 0; got '0'"),
        (["--worker-timeout", "0"], "argument --worker-timeout: must be a number > 0"),
        (["--scheduler", "not a url!!"], "scheduler must be a Dask scheduler's address"),
        (["--scheduler", "xyz:abc"], "got 'xyz:abc'"),
        (["--scheduler", "http://127.0.0.1:8787"], "http:// is the dashboard's"),
    ],
)
def test_values_of_the_wrong_type_huge_grids_and_conflicts_are_one_line(trained, tmp_path, capsys, argv, named):
    err = _refused(capsys, [*argv, "--set", "local_steps=2"] if "local_steps" not in str(argv) else argv, tmp_path)
    assert named in err and trained.calls == []


def _file(tmp_path, content: bytes):
    path = tmp_path / "grid.yml"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"fixed: [rounds, 1]\n", "its fixed is not a mapping; got ['rounds', 1]"),
        (b"grid: [seed, 0, 1]\n", "its grid is not a mapping"),
        ("grid: {bias: [0.5]}\n# caf\xe9\n".encode("latin-1"), "file must be UTF-8 text (YAML)"),
        (bytes(range(256)), "file must be UTF-8 text (YAML)"),
        (b"", "is empty"),
        (b"grid: {seed: [0, 1}\n", "file must be valid YAML; "),
        (b"fixed: {lr: [0.1, 0.2]}\n", "lr must be a finite number; got [0.1, 0.2] (values to sweep go under grid"),
        (b"fixed: {seed: 1}\ngrid: {seed: [0, 1]}\n", "seed must be given once, fixed or swept; got it twice in"),
        (b"grid: {seed: []}\n", "seed must have at least one value"),
    ],
)
def test_a_grid_file_of_the_wrong_shape_or_encoding_is_one_line(trained, tmp_path, capsys, content, named):
    err = _refused(capsys, [_file(tmp_path, content)], tmp_path)
    assert named in err and trained.calls == []


BOMB = "".join(f"{n}: &{n} [{', '.join([f'*{p}' if p else '0.5'] * 9)}]\n"  # 9**9 values in 300 bytes
               for p, n in zip(["", *"abcdefgh"], "abcdefghi", strict=True)).encode()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (BOMB, "line 2, column 8: aliases (*name) are not allowed in a grid file"),
        (b"grid: {bias: &b [0.5]}\nfixed: {rounds: *b}\n", "aliases (*name) are not allowed"),
        (b"grid: {seed: [" + b"1" * 5000 + b"]}\n", "Exceeds the limit (4300 digits)"),
        (b"grid: {seed: " + b"[" * 5000 + b"]" * 5000 + b"}\n", "maximum recursion depth exceeded"),
    ],
)
def test_alias_bombs_huge_numbers_and_deep_nesting_are_refused_at_once(trained, tmp_path, capsys, content, named):
    start = time.monotonic()
    err = _refused(capsys, [_file(tmp_path, content)], tmp_path)
    assert named in err and len(err) < 400 and time.monotonic() - start < 5  # not 16 s and a GB of repr


def test_error_messages_never_build_a_whole_repr():
    value: object = ["x"] * 9
    for _ in range(12):  # 9**13 items, shared: a full repr would never finish
        value = [value] * 9
    start = time.monotonic()
    assert len(sweep._short(value)) <= 60 and time.monotonic() - start < 1
    with pytest.raises(ConfigError, match=r"^seed must be an integer; got \[\[\[.{0,57}\.\.\. \(values to sweep"):
        sweep.parse_value("seed", value)


def test_values_take_their_fields_type_so_keys_do_not_depend_on_the_writing(trained, tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    base = ["--set", "rounds=1", "--set", "local_steps=2", "--runs-dir", str(runs), "--no-progress", "--processes", "1"]
    assert main(["sweep", "--grid", "bias=0,1", "--set", "lr=1e-1", *base, "--out", str(out)]) == 0
    assert len(trained.calls) == 2 and {type(c.bias) for c in trained.calls} == {float}
    file = _file(tmp_path, b"fixed: {lr: 1e-1}\ngrid: {bias: [0.0, 1e0]}\n")
    assert main(["sweep", file, *base, "--out", str(out)]) == 0
    assert main(["sweep", "--grid", "bias=0.0,1", "--set", "lr=0.1", *base, "--out", str(out)]) == 0
    assert len(trained.calls) == 2  # the same two runs, however written
    rows = _rows(out / "runs.csv")
    assert [(r["bias"], r["lr"]) for r in rows] == [("0.0", "0.1"), ("1.0", "0.1")]


def test_duplicate_points_are_merged_and_said(trained, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", "--grid", "seed=0,0", "--grid", "bias=0.5,0.5", "--set", "rounds=1", "--set", "local_steps=2",
            "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "seed: 0 listed more than once, counted once" in captured.err and "bias: 0.5 listed" in captured.err
    assert len(_rows(out / "runs.csv")) == 1 and len(trained.calls) == 1
    assert "1 runs (0 failed" in captured.out
    # points that are one run: bias is not used by the uniform allocation
    argv = ["sweep", "--grid", "bias=0,1", "--set", "allocation=uniform", "--set", "rounds=1", "--processes", "1",
            "--set", "local_steps=2", "--out", str(out), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    assert "1 grid points are runs of other points" in capsys.readouterr().err
    assert len(_rows(out / "runs.csv")) == 1


def test_too_little_free_space_is_refused_before_training(trained, tmp_path, capsys, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    err = _refused(capsys, ["--grid", "seed=0,1", "--set", "rounds=1", "--set", "local_steps=2"], tmp_path)
    assert "must have room for what will be written there" in err and "1.0 KB free" in err and trained.calls == []


def _disk_full(monkeypatch):
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("fedcore.store.os.fsync", full)


def test_a_full_disk_while_storing_or_writing_tables_is_one_line(trained, tmp_path, capsys, monkeypatch):
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["sweep", *GRID, "--out", str(out), "--runs-dir", str(runs), "--no-progress"]
    with monkeypatch.context() as patch:
        _disk_full(patch)
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"could not write {runs}/" in err and "No space left on device; 0 of 6 runs are stored" in err
    assert not list(runs.glob("*")) and not out.exists()
    assert main(argv) == 0  # room again: all six train and are stored
    (out / "runs.csv").unlink()
    with monkeypatch.context() as patch:
        _disk_full(patch)
        assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == f"sweep: could not write {out}/runs.csv: No space left on device; all 6 runs are stored: make " \
                  "room and start again for the tables"
    assert len(trained.calls) == 1 + 6 and not (out / "runs.csv").exists()  # the first lost to the full disk


def test_a_failed_check_leaves_no_folder_behind(tmp_path, capsys, monkeypatch):
    import torchvision.datasets

    from fedcore import data

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(RuntimeError("x")))
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    monkeypatch.delenv("FEDCORE_SCHEDULER", raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--grid", "seed=0,1", "--set", f"data_dir={tmp_path / 'empty'}", "--set", "rounds=1",
              "--out", str(tmp_path / "newout" / "x"), "--runs-dir", str(tmp_path / "runs" / "deeper")])
    assert exit_info.value.code == 2 and "data_dir must hold the mnist dataset" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
