"""run_many on a local Dask cluster: the same histories as the local pool, a killed worker, a wrong address."""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
from distributed import Client, LocalCluster

from fedcore import RunConfig, executors, run_many
from fedcore.cli import main
from fedcore.executors import SchedulerError
from fedcore.store import RunStore

TINY = RunConfig(rounds=2, local_epochs=None, local_steps=3, device="cpu")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def _history(result):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result.rounds], result.workers


def test_cluster_and_local_pool_give_identical_histories(cluster, tmp_path, monkeypatch):
    jobs = [(TINY.replace(bias=1.0), "federated"), (TINY, "centralized")]
    local = run_many(jobs, RunStore(tmp_path / "local"), processes=2, progress=False)
    monkeypatch.setenv(executors.SCHEDULER_ENV, cluster.scheduler_address)  # as make book would
    remote = run_many(jobs, RunStore(tmp_path / "cluster"), progress=False)
    assert [_history(r) for r in remote] == [_history(r) for r in local]
    assert len(list((tmp_path / "cluster").glob("*.json"))) == 2  # the client stored what came back


def test_a_worker_killed_mid_run_is_retried_elsewhere(cluster, tmp_path):
    killed = []

    def kill_the_busy_worker() -> None:
        with Client(cluster.scheduler_address, set_as_default=False) as client:
            deadline = time.monotonic() + 60
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # into the run (several seconds of training)
            busy = next((w for w, tasks in client.processing().items() if tasks), None)
            if busy is None:
                return  # the run was over already: the test fails below
            pid = client.run(os.getpid, workers=[busy])[busy]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_the_busy_worker)
    killer.start()
    config = TINY.replace(rounds=8, local_steps=100, bias=0.5)
    [result] = run_many([(config, "federated")], RunStore(tmp_path), scheduler=cluster.scheduler_address,
                        progress=False)
    killer.join()
    assert killed and len(result.rounds) == 9
    assert [p.name for p in tmp_path.iterdir()] == [f"{config.key()}.json"]  # one whole result, no temporary file
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarted it for the other tests


def test_an_unreachable_scheduler_is_one_clear_error_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    with pytest.raises(SchedulerError, match=r"tcp://127\.0\.0\.1:9") as err:
        run_many([(TINY, "federated"), (TINY.replace(seed=1), "federated")], RunStore(tmp_path),
                 scheduler="tcp://127.0.0.1:9", progress=False)
    assert "no Dask scheduler answered" in str(err.value)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_scheduler_without_workers_is_given_up_after_the_worker_timeout(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FEDCORE_SCHEDULER", raising=False)
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as empty:
        code = main(["sweep", "--grid", "seed=0,1", "--set", "rounds=1", "--set", "local_steps=2", "--scheduler",
                     empty.scheduler_address, "--worker-timeout", "2", "--out", str(tmp_path / "out"),
                     "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"sweep: no Dask worker joined the scheduler at '{empty.scheduler_address}'" in err
    assert "within 2 s (--worker-timeout)" in err and not (tmp_path / "out").exists()


def test_a_malformed_address_is_refused_at_once_without_dask_noise(tmp_path, capfd):
    for address in ("not a url!!", "http://127.0.0.1:8787", "xyz:abc"):
        with pytest.raises(SchedulerError, match="scheduler must be a Dask scheduler's address"):
            run_many([(TINY, "federated")], RunStore(tmp_path), scheduler=address, progress=False)
    import gc

    gc.collect()  # a Client half made would complain here, in its __del__
    assert capfd.readouterr().err == ""


def _when_training(address: str, then: Callable[[], None], limit_s: float = 120) -> threading.Thread:
    """A thread that calls ``then`` a second after the cluster first has a task processing."""

    def wait_then() -> None:
        deadline = time.monotonic() + limit_s
        with Client(address, set_as_default=False) as client:
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1)
        then()

    thread = threading.Thread(target=wait_then)
    thread.start()
    return thread


class Records(logging.Handler):
    """The log records that reach a logger's handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_scheduler_lost_mid_sweep_is_named_in_one_line(tmp_path, capfd, monkeypatch):
    logged = Records()
    monkeypatch.setattr(logging.getLogger("distributed.client"), "handlers", [logged])  # Dask's stderr handler's
    with executors.command_line_cluster(tmp_path) as (address, scheduler, _):
        killer = _when_training(address, scheduler.kill)
        monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 2.0)
        code = main(["sweep", "--grid", "seed=0,1,2", "--set", "rounds=50", "--set", "local_steps=100",
                     "--scheduler", address, "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"),
                     "--no-progress"])
        killer.join()
    err = capfd.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert [r.getMessage() for r in logged.records] == []  # no 'distributed.client - ERROR' while reconnecting
    assert err.startswith(f"sweep: lost the Dask scheduler at '{address}': 3 runs did not come back"), err


def test_a_sweep_whose_workers_all_die_stops_after_the_worker_timeout_keeping_what_came_back(tmp_path, capfd):
    """The nanny and its worker killed once the first (short) run is stored: one line, exit 2, no hang."""
    runs = tmp_path / "runs"
    with executors.command_line_cluster(tmp_path) as (address, _, worker):
        killed: list[float] = []

        def kill_once_one_is_stored() -> None:
            deadline = time.monotonic() + 120
            while not list(runs.glob("*.json")) and time.monotonic() < deadline:
                time.sleep(0.05)
            os.killpg(worker.pid, signal.SIGKILL)
            killed.append(time.monotonic())

        killer = _when_training(address, kill_once_one_is_stored)
        code = main(["sweep", "--grid", "rounds=1,500", "--set", "local_steps=100", "--scheduler", address,
                     "--worker-timeout", "3", "--out", str(tmp_path / "out"), "--runs-dir", str(runs),
                     "--no-progress"])
        stopped = time.monotonic()
        killer.join()
    err = capfd.readouterr().err
    assert code == 2 and killed and stopped - killed[0] < 30 and len(list(runs.glob("*.json"))) == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"sweep: the Dask scheduler at '{address}' (from --scheduler or $FEDCORE_SCHEDULER) has "
                          "had no worker for 3 s (--worker-timeout)"), err
