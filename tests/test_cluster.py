"""run_many on a local Dask cluster: the same histories as the local pool, a killed worker, a wrong address."""

import os
import signal
import threading
import time

import pytest
from distributed import Client, LocalCluster

from fedcore import RunConfig, executors, run_many
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
