"""The run store checks what it reads, replaces what is wrong, and never serves another run's result."""

import errno
import json
import logging
import os
import time

import pytest

from fedcore import RunConfig, run
from fedcore.config import ConfigError
from fedcore.engine import run_federated
from fedcore.store import RunStore

CONFIG = RunConfig(rounds=2, local_epochs=None, local_steps=3)


@pytest.fixture
def trained(monkeypatch, toy):
    """Training replaced by the engine on the toy set; the list holds every config trained."""
    calls = []

    def counting(config, progress=True):
        calls.append(config)
        return run_federated(config, progress=progress, data=toy)

    monkeypatch.setattr("fedcore.runner.KINDS", {"federated": counting})
    return calls


def _whole_run(toy, config=CONFIG):
    return run_federated(config, progress=False, data=toy).to_dict()


def _damaged(toy, case: str) -> str:
    """What a store file might hold instead of the run it is named after."""
    good = _whole_run(toy)
    text = json.dumps(good)
    return {
        "truncated": lambda: text[: len(text) // 2],
        "empty": lambda: "",
        "not a run": lambda: json.dumps({"hello": 1}),
        "a list": lambda: "[]",
        "no rounds": lambda: json.dumps({**good, "rounds": []}),
        "rounds cut short": lambda: json.dumps({**good, "rounds": good["rounds"][:2]}),
        "wrong key": lambda: json.dumps({**good, "key": "0123456789abcdef"}),
        "another config (20 workers)": lambda: json.dumps(_whole_run(toy, CONFIG.replace(workers=20))),
        "not UTF-8": lambda: "\udcff",
        "last round lacks test_accuracy": lambda: json.dumps(
            {**good, "rounds": [*good["rounds"][:-1], {k: v for k, v in good["rounds"][-1].items()
                                                         if k != "test_accuracy"}]}),
        "test_accuracy a string": lambda: json.dumps(
            {**good, "rounds": [*good["rounds"][:-1], {**good["rounds"][-1], "test_accuracy": "0.9"}]}),
        "samples a float": lambda: json.dumps({**good, "rounds": [{**row, "samples": 1.5} for row in good["rounds"]]}),
        "test_loss NaN": lambda: json.dumps({**good, "rounds": [*good["rounds"][:-1],
                                                               {**good["rounds"][-1], "test_loss": float("nan")}]}),
    }[case]()


CASES = ["truncated", "empty", "not a run", "a list", "no rounds", "rounds cut short", "wrong key",
         "another config (20 workers)", "not UTF-8", "last round lacks test_accuracy", "test_accuracy a string",
         "samples a float", "test_loss NaN"]


@pytest.mark.parametrize("case", CASES)
def test_a_wrong_store_file_is_named_retrained_and_replaced(tmp_path, toy, trained, caplog, case):
    store = RunStore(tmp_path)
    path = store.path(CONFIG.key())
    path.write_text(_damaged(toy, case), errors="surrogateescape")
    with caplog.at_level(logging.WARNING, logger="fedcore.store"):
        result = run(CONFIG, store=store, progress=False)
    assert len(trained) == 1
    assert str(path) in caplog.text and "training the run again" in caplog.text
    assert result.config["workers"] == 10 and len(result.rounds) == 3
    assert json.loads(path.read_text()) == json.loads(json.dumps(result.to_dict()))  # replaced by the whole run
    caplog.clear()
    run(CONFIG, store=store, progress=False)
    assert len(trained) == 1 and caplog.text == ""  # read back from then on


def test_stored_files_are_readable_by_others(tmp_path, toy, trained):
    store = RunStore(tmp_path)
    run(CONFIG, store=store, progress=False)
    assert os.stat(store.path(CONFIG.key())).st_mode & 0o777 == 0o644


def test_force_trains_again(tmp_path, toy, trained):
    store = RunStore(tmp_path)
    run(CONFIG, store=store, progress=False)
    run(CONFIG, store=store, progress=False)
    run(CONFIG, store=store, progress=False, force=True)
    assert len(trained) == 2


def test_more_worker_scoring_serves_less_and_a_request_for_more_retrains(tmp_path, toy, trained):
    store = RunStore(tmp_path)
    scored = CONFIG.replace(eval_workers=100)
    assert scored.key() == CONFIG.key()  # recorded detail, not part of what is trained
    run(scored, store=store, progress=False)
    for less in (0, 50, 100):
        assert run(CONFIG.replace(eval_workers=less), store=store, progress=False).config["eval_workers"] == 100
    assert len(trained) == 1
    more = run(CONFIG.replace(eval_workers=150), store=store, progress=False)
    assert len(trained) == 2 and more.config["eval_workers"] == 150
    assert json.loads(store.path(CONFIG.key()).read_text())["config"]["eval_workers"] == 150  # replaced
    assert run(CONFIG.replace(eval_workers=120), store=store, progress=False).config["eval_workers"] == 150


def test_worker_scoring_does_not_change_what_is_trained(toy):
    plain = run_federated(CONFIG, progress=False, data=toy)
    scored = run_federated(CONFIG.replace(eval_workers=100), progress=False, data=toy)
    assert [r["test_loss"] for r in plain.rounds] == [r["test_loss"] for r in scored.rounds]


def _age(path, seconds):
    os.utime(path, (time.time() - seconds, time.time() - seconds), follow_symlinks=False)


def test_leftover_temporary_files_older_than_a_run_are_removed(tmp_path, toy, trained):
    store = RunStore(tmp_path)
    old = tmp_path / ".fedcore-tmp.0123456789abcdef.json.x1_ab.tmp"
    live = tmp_path / ".fedcore-tmp.fedcba9876543210.json.x2.tmp"
    for path in (old, live):
        path.write_text("{")
    _age(old, 3600)
    _age(live, -3600)  # as if still being written
    run(CONFIG, store=store, progress=False)
    assert not old.exists() and live.exists()


def test_the_cleanup_leaves_a_users_files_and_links_alone(tmp_path, toy, trained):
    """Hidden .tmp files the store did not name, and a link named like its temporaries (and what it points to),
    stay (issue 22, item 5)."""
    notes, other = tmp_path / ".my-notes.tmp", tmp_path / ".fedcore-tmp.notes.json.abc.tmp"
    link, target = tmp_path / ".fedcore-tmp.0123456789abcdef.json.link.tmp", tmp_path / "kept" / "data.txt"
    target.parent.mkdir()
    for path in (notes, other, target):
        path.write_text("mine")
    link.symlink_to(target)
    for path in (notes, other, link, target):
        _age(path, 3600)
    run(CONFIG, store=RunStore(tmp_path), progress=False)
    assert notes.read_text() == other.read_text() == target.read_text() == "mine" and link.is_symlink()


def test_a_folder_named_like_a_temporary_file_is_left_alone(tmp_path, toy, trained):
    """The cleanup skips what is not a regular file, and the run ends normally (issue 22, item 9)."""
    folders = [tmp_path / ".x.tmp", tmp_path / ".fedcore-tmp.0123456789abcdef.json.folder.tmp"]
    for folder in folders:
        folder.mkdir()
        _age(folder, 3600)
    assert run(CONFIG, store=RunStore(tmp_path), progress=False).key == CONFIG.key()
    assert all(folder.is_dir() for folder in folders)


def test_a_runs_folder_that_is_a_file_is_refused_before_training(tmp_path, toy, trained):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="runs_dir must be a writable folder") as err:
        run(CONFIG, store=RunStore(tmp_path / "file" / "runs"), progress=False)
    assert err.value.param == "runs_dir" and trained == []


def test_a_read_only_runs_folder_is_refused_before_training(monkeypatch, tmp_path, toy, trained):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(ConfigError, match="Read-only file system"):
        run(CONFIG, store=RunStore(tmp_path), progress=False)
    assert trained == []


@pytest.mark.parametrize("case", ["FIFO", "device", "oversized"])
def test_a_store_entry_that_is_no_run_file_is_named_retrained_and_replaced(tmp_path, toy, trained, caplog, case):
    from fedcore.store import READ_LIMIT, expected_bytes

    store = RunStore(tmp_path)
    path = store.path(CONFIG.key())
    if case == "FIFO":
        os.mkfifo(path)  # reading it would wait for a writer forever
    elif case == "device":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.write_text(json.dumps(_whole_run(toy)) + " " * READ_LIMIT * expected_bytes(CONFIG))
    with caplog.at_level(logging.WARNING, logger="fedcore.store"):
        result = run(CONFIG, store=store, progress=False)
    expected = {"FIFO": "is a FIFO, not a file", "device": "is a device, not a file",
                "oversized": "more than any run of its configuration"}[case]
    assert len(trained) == 1 and expected in caplog.text and str(path) in caplog.text
    assert path.is_file() and not path.is_symlink() and json.loads(path.read_text())["key"] == result.key


def test_a_folder_where_a_run_goes_is_refused_before_training(tmp_path, toy, trained):
    store = RunStore(tmp_path)
    store.path(CONFIG.key()).mkdir()
    with pytest.raises(ConfigError, match=r"runs_dir must hold each run as a file; .* is a folder: remove it"):
        run(CONFIG, store=store, progress=False)
    assert trained == []


@pytest.mark.parametrize("changes", [{}, {"eval_workers": 100}, {"workers": 40}, {"participation": 0.3},
                                     {"rounds": 6, "validation": 100}])
def test_the_expected_size_bounds_what_runs_take(toy, changes):
    from fedcore.engine import run_centralized
    from fedcore.store import expected_bytes

    config = CONFIG.replace(**changes)
    assert len(json.dumps(_whole_run(toy, config))) <= expected_bytes(config)
    central = run_centralized(config, progress=False, data=toy).to_dict()
    assert len(json.dumps(central)) <= expected_bytes(config, "centralized")


def test_a_run_is_refused_before_training_without_room_and_a_failed_write_names_the_file(
        tmp_path, toy, trained, monkeypatch):
    import shutil

    from fedcore.store import WriteError

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
        with pytest.raises(ConfigError, match=r"runs_dir must have room .* KB needed, 100 bytes free"):
            run(CONFIG, store=RunStore(tmp_path / "runs"), progress=False)
    assert trained == [] and not (tmp_path / "runs").exists()
    monkeypatch.setattr("fedcore.store.os.replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(WriteError, match=r"could not write .*runs/[0-9a-f]{16}\.json: full") as err:
        run(CONFIG, store=RunStore(tmp_path / "runs"), progress=False)
    assert err.value.errno == errno.ENOSPC and len(trained) == 1 and list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize(("needed", "free", "shown"), [
    (49_500, 28_000, "about 49.5 KB needed, 28.0 KB free"), (2_000, 999, "about 2.0 KB needed, 999 bytes free"),
    (3_500_000, 0, "about 3.5 MB needed, 0 bytes free"), (2 * 10**12, 10**9, "about 2,000.0 GB needed, 1.0 GB free"),
])
def test_a_full_disk_shows_the_sizes_in_a_unit_that_shows_them(monkeypatch, tmp_path, needed, free, shown):
    import shutil

    from fedcore.store import check_free

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**13, 10**13 - free, free))
    with pytest.raises(ConfigError, match=rf"runs_dir must have room for what will be written there: {shown}; got"):
        check_free(tmp_path, needed, "runs_dir")


