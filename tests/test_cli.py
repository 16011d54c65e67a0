import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedcore import experiments
from fedcore.cli import config_from, main, parser
from fedcore.config import RunConfig

from .conftest import unreadable


def test_help_documents_every_option_with_its_default():
    text = parser()._subparsers._group_actions[0].choices["run"].format_help()
    for name in RunConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text
    assert "in [0, 1]" in text and "(default: 0.0)" in text


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--bias", "1.5"], "--bias"),
        (["--workers", "1"], "--workers"),
        (["--allocation", "dirichlet", "--alpha", "0"], "--alpha"),
        (["--local-steps", "0"], "--local-steps"),
        (["--model", "vgg"], "--model"),
    ],
)
def test_bad_options_exit_2_naming_the_option_and_write_nothing(tmp_path, capsys, argv, option):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *argv, "--runs-dir", str(runs), "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "out.json").exists()


def test_a_small_real_run_writes_its_result(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "fedcore", "run", "--bias", "1", "--rounds", "2", "--local-steps", "5",
           "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "test accuracy" in done.stdout
    result = json.loads(out.read_text())
    assert result["config"]["bias"] == 1.0 and len(result["rounds"]) == 3
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1


@pytest.fixture
def no_training(monkeypatch):
    """Training that fails the test: every case below must stop before it."""

    def forbidden(config, progress=True):
        raise AssertionError("trained although the input was bad")

    monkeypatch.setattr("fedcore.runner.KINDS", {"federated": forbidden, "centralized": forbidden})


@pytest.fixture
def calls(monkeypatch, toy) -> list:
    """Training on the small synthetic data; the configurations trained, in order."""
    from fedcore.engine import run_federated

    trained = []
    monkeypatch.setattr("fedcore.runner.KINDS", {"federated": lambda c, progress: trained.append(c) or
                                                 run_federated(c, progress=False, data=toy)})
    return trained


def _fails(capsys, argv: list[str]) -> str:
    """Run the command line, expecting exit 2 and a single error line; that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m fedcore run: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--local-epochs", "5", "--local-steps", "2"], "--local-epochs/--local-steps are exclusive"),
        (["--workers", "100000"], "--workers must be few enough that each gets data"),
        (["--allocation", "dirichlet", "--alpha", "0.001"], "--alpha must be larger for 10 workers"),
        (["--allocation", "dirichlet", "--alpha", "inf"], "--alpha must be > 0 and finite; got inf"),
        (["--lr", "inf"], "--lr must be > 0 and finite; got inf"),
        (["--mu", "nan", "--strategy", "fedprox"], "--mu must be >= 0 and finite; got nan"),
        (["--strategy", "fedbabu", "--model", "logistic"], "--strategy/--model must be another pair than fedbabu"),
    ],
)
def test_failures_found_after_validation_now_exit_2_before_training(tmp_path, capsys, mnist, no_training, argv,
                                                                    expected):
    err = _fails(capsys, ["run", *argv, "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert expected in err
    assert not list((tmp_path / "runs").glob("*.json"))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--local-steps", "100000000"], "--local-steps must be at most "),
        (["--batch-size", "full", "--local-steps", "20000"], "--local-steps must be at most "),
        (["--workers", "15000", "--allocation", "uniform", "--processes", "2"], "--workers must be at most 326 with 2"),
    ],
)
def test_runs_beyond_the_machines_memory_or_open_files_exit_2_before_training(monkeypatch, tmp_path, capsys, mnist,
                                                                             no_training, argv, expected):
    """Issue 22, item 11: these ran out of memory or open files part-way; here on a machine with 8 GB and
    ulimit -n 1024."""
    from fedcore import limits

    monkeypatch.setattr(limits, "machine_memory", lambda device: 8 * 10**9)
    monkeypatch.setattr(limits.resource, "getrlimit", lambda which: (1024, 4096))
    err = _fails(capsys, ["run", *argv, "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert expected in err and not (tmp_path / "runs").exists()


def test_too_many_workers_are_counted_not_listed(tmp_path, capsys, mnist, no_training):
    err = _fails(capsys, ["run", "--workers", "100000", "--runs-dir", str(tmp_path)])
    assert "of 100000 workers without any" in err and len(err) < 400


def test_cuda_without_a_gpu_exits_2(monkeypatch, tmp_path, capsys, mnist, no_training):
    from fedcore import version

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    version.backend.cache_clear()
    err = _fails(capsys, ["run", "--device", "cuda", "--runs-dir", str(tmp_path)])
    version.backend.cache_clear()
    assert "--device must be auto or cpu here: CUDA is not available" in err


def test_an_empty_data_dir_exits_2_naming_it_and_creates_nothing(monkeypatch, tmp_path, capsys, no_training):
    import torchvision.datasets

    from fedcore import data

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried one\nTried two")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    (tmp_path / "empty").mkdir()
    err = _fails(capsys, ["run", "--data-dir", str(tmp_path / "empty"), "--runs-dir", str(tmp_path / "runs")])
    assert err.startswith("python -m fedcore run: error: --data-dir must hold the mnist dataset")
    assert "FEDCORE_DATA_DIR" not in err
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_damaged_data_file_exits_2_naming_it(tmp_path, capsys, mnist, no_training):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).write_bytes(b"")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\0" * 1000)
    err = _fails(capsys, ["run", "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")])
    assert str(raw / "train-images-idx3-ubyte") in err and "expected 47,040,016" in err


def test_unreadable_data_exits_2_naming_it(monkeypatch, tmp_path, capsys, no_training):
    """Issue 22, item 13: a data folder that cannot be read (chmod 000; mimicked, as root reads anything)."""
    raw = unreadable(monkeypatch, tmp_path / "data")
    err = _fails(capsys, ["run", "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")])
    assert err.startswith("python -m fedcore run: error: --data-dir must hold the mnist dataset: ")
    assert str(raw) in err and "Permission denied" in err


def test_an_unwritable_runs_folder_or_a_folder_as_out_exit_2_before_training(tmp_path, capsys, mnist, no_training):
    (tmp_path / "file").write_text("")
    err = _fails(capsys, ["run", "--runs-dir", str(tmp_path / "file" / "runs")])
    assert "--runs-dir must be a writable folder" in err
    (tmp_path / "folder").mkdir()
    err = _fails(capsys, ["run", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "folder")])
    assert "--out must be a file path, not a folder" in err
    assert list((tmp_path / "folder").iterdir()) == []


def test_help_shows_one_default_per_option_and_explains_the_bias_scale():
    text = " ".join(parser()._subparsers._group_actions[0].choices["run"].format_help().split())
    options = re.split(r" (?=--[a-z])", text.split("options:", 1)[1])
    for option in options:
        assert option.count("default") <= 1, option
    assert "0 = each worker lacks its own digit" in text and "1/workers = uniform in expectation" in text
    assert "1 = one digit per worker" in text and "local_steps=50" in text and "eval_workers=1000" in text


def test_standard_uses_the_reports_runs():
    args = parser().parse_args(["run", "--standard", "--bias", "1"])
    assert config_from(args) == experiments.config_for(1.0, 0)
    assert config_from(args).key() == experiments.config_for(1.0, 0).key()
    args = parser().parse_args(["run", "--standard", "--local-epochs", "2"])
    assert (config_from(args).local_epochs, config_from(args).local_steps) == (2, None)


def test_force_retrains(tmp_path, calls):
    argv = ["run", "--rounds", "1", "--local-steps", "2", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 0 and main(argv) == 0 and len(calls) == 1
    assert main([*argv, "--force"]) == 0 and len(calls) == 2


def test_a_read_only_store_serves_the_runs_it_holds_and_refuses_only_training(tmp_path, monkeypatch, capsys, calls):
    """Issue 22, item 15: reading needs no write; a run to train (missing, or --force) is refused in one line."""
    import errno
    import tempfile

    runs = tmp_path / "runs"
    argv = ["run", "--rounds", "1", "--local-steps", "2", "--runs-dir", str(runs), "--no-progress"]
    sweep = ["sweep", "--grid", "seed=0", "--set", "rounds=1", "--set", "local_steps=2", "--processes", "1",
             "--runs-dir", str(runs), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0 and len(calls) == 1
    mkstemp = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if Path(dir) == runs:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(argv) == 0 and main(sweep) == 0 and len(calls) == 1
    assert "stored at" in capsys.readouterr().out and (tmp_path / "out" / "runs.csv").is_file()
    for more in (["--force"], ["--seed", "1"]):
        assert "--runs-dir must be a writable folder" in _fails(capsys, [*argv, *more])
    assert len(calls) == 1


@pytest.mark.parametrize("damage", [lambda row: row.pop("test_accuracy"), lambda row: row.update(test_loss="0.3")],
                         ids=["no test_accuracy", "test_loss a string"])
def test_a_stored_run_with_a_damaged_last_round_is_trained_again(tmp_path, monkeypatch, capsys, calls, damage):
    """Issue 22, item 8: no KeyError or format error from the summary line: the run trains again."""
    argv = ["run", "--rounds", "1", "--local-steps", "2", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    [path] = tmp_path.glob("*.json")
    stored = json.loads(path.read_text())
    damage(stored["rounds"][-1])
    path.write_text(json.dumps(stored))
    assert main(argv) == 0 and len(calls) == 2 and "round 1, test accuracy" in capsys.readouterr().out
    assert isinstance(json.loads(path.read_text())["rounds"][-1]["test_accuracy"], float)


def test_ctrl_c_exits_130_without_a_traceback(tmp_path):
    # python -m fedcore, with Python's Ctrl-C handler even where this test runs with SIGINT ignored
    start = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "runpy.run_module('fedcore', run_name='__main__')")
    cmd = [sys.executable, "-c", start, "run", "--rounds", "1000", "--runs-dir", str(tmp_path)]
    process = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "round/s" not in seen:  # the progress bar: training has started
        char = process.stderr.read(1)
        assert char, f"ended before training: {seen}"
        seen += char
    process.send_signal(signal.SIGINT)
    err = process.stderr.read()
    assert process.wait() == 130
    assert "Traceback" not in err and err.rstrip().endswith("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["0", "-1", "abc", " 2", "\u00b2", "1025"])
def test_a_bad_fedcore_threads_breaks_only_what_uses_it(monkeypatch, tmp_path, capsys, no_training, bad):
    monkeypatch.setenv("FEDCORE_THREADS", bad)
    for command in ("run", "sweep", "notebook"):
        assert "usage:" in parser()._subparsers._group_actions[0].choices[command].format_help()
    err = _fails(capsys, ["run", "--standard", "--bias", "1", "--runs-dir", str(tmp_path / "runs")])
    assert f"$FEDCORE_THREADS must be an integer in [1, 1024]; got '{bad}'" in err and not (tmp_path / "runs").exists()


def test_a_bad_fedcore_threads_does_not_break_the_import():
    env = {**os.environ, "FEDCORE_THREADS": "abc"}
    done = subprocess.run([sys.executable, "-m", "fedcore", "--help"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0 and "usage: python -m fedcore" in done.stdout and done.stderr == ""


def test_a_bad_fedcore_threads_stops_the_book_build_in_one_line_before_any_notebook(tmp_path):
    env = {**os.environ, "FEDCORE_THREADS": "0"}
    script = Path(__file__).resolve().parent.parent / "scripts" / "build_book.py"
    done = subprocess.run([sys.executable, str(script), "--no-book"], capture_output=True, text=True, env=env,
                          timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "FAILED: $FEDCORE_THREADS must be an integer in [1, 1024]; got '0'"


def test_a_full_disk_is_refused_before_training_or_named_in_one_line(tmp_path, capsys, monkeypatch, calls):
    import errno
    import shutil

    runs = tmp_path / "runs"
    argv = ["run", "--rounds", "1", "--local-steps", "2", "--runs-dir", str(runs), "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
        assert "--runs-dir must have room for what will be written there" in _fails(capsys, argv)
    assert calls == [] and not runs.exists()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("fedcore.store.os.fsync", full)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and len(calls) == 1
    assert err.startswith(f"python -m fedcore run: could not write {runs}/") and "No space left on device" in err
    assert list(runs.iterdir()) == []


def test_a_failed_check_leaves_no_folder_behind(monkeypatch, tmp_path, capsys, no_training):
    import torchvision.datasets

    from fedcore import data

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: (_ for _ in ()).throw(RuntimeError()))
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    (tmp_path / "empty").mkdir()
    _fails(capsys, ["run", "--data-dir", str(tmp_path / "empty"), "--runs-dir", str(tmp_path / "runs" / "deep"),
                    "--out", str(tmp_path / "newdir" / "sub" / "r.json")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
