"""Issue 22, item 11: memory and open files a run needs, refused before any work when the machine lacks them."""

import pytest
import torch

from fedcore import limits
from fedcore.config import ConfigError, RunConfig
from fedcore.experiments import STANDARD_SETTINGS

CPU = torch.device("cpu")
GB = 10**9


def steps(n: int, **changes: object) -> RunConfig:
    return RunConfig(local_epochs=None, local_steps=n, **changes)


@pytest.fixture
def memory(monkeypatch):
    """A machine with 16 GB."""
    monkeypatch.setattr(limits, "machine_memory", lambda device: 16 * GB)


def test_the_round_plan_is_counted():
    """A round plans [steps, workers, batch] int64 row indices up front: 256 GB for 10**8 steps of 10 workers."""
    need = limits.memory_needed(steps(10**8), "federated", 6000, 60_000, 10_000)
    assert need.largest == 10**8 * 10 * 32 * 8
    assert need.total > need.largest + 10**8 * 10 * 32 * 4  # and the float32 mask beside it
    full = limits.memory_needed(steps(20_000, batch_size=None), "federated", 6000, 60_000, 10_000)
    assert full.largest == 20_000 * 10 * 6000 * 8  # full batch: the largest worker's whole shard each step


@pytest.mark.parametrize(("config", "param"), [
    (steps(10**8), "local_steps"),
    (steps(20_000, batch_size=None), "local_steps"),
    (RunConfig(local_epochs=10**6), "local_epochs"),
    (RunConfig(workers=2000, model="cnn", processes=1), "workers"),  # 2000 stacked CNNs, their gradients, ...
])
def test_a_run_beyond_the_memory_is_refused_naming_the_parameter(memory, config, param):
    with pytest.raises(ConfigError) as err:
        limits.check(config, "federated", CPU, 6000, 60_000, 10_000)
    assert err.value.param == param and "this machine has 16 GB" in str(err.value)


def test_the_local_steps_said_to_fit_fit(memory):
    with pytest.raises(ConfigError) as err:
        limits.check(steps(10**8), "federated", CPU, 6000, 60_000, 10_000)
    fits = int(str(err.value).split("at most ")[1].split(" ")[0].replace(",", ""))
    assert 10**6 < fits < 10**8
    limits.check(steps(fits), "federated", CPU, 6000, 60_000, 10_000)
    with pytest.raises(ConfigError):
        limits.check(steps(fits + 1), "federated", CPU, 6000, 60_000, 10_000)


@pytest.mark.parametrize("changes", [
    {},
    {"workers": 100, "local_steps": 188, "strategy": "scaffold"},
    {"local_steps": 1, "batch_size": None},  # the exactness page's full-batch runs
    {"model": "cnn", "local_steps": 20},
    {"workers": 100, "allocation": "classes", "classes_per_worker": 3},  # many workers holding three digits
])
@pytest.mark.parametrize("kind", ["federated", "centralized", "divergence"])
def test_the_books_runs_fit_in_4_gb(monkeypatch, changes, kind):
    monkeypatch.setattr(limits, "machine_memory", lambda device: 4 * GB)
    config = RunConfig(**STANDARD_SETTINGS).replace(**changes)
    limits.check(config, kind, CPU, 60_000 // config.workers + 1000, 60_000, 10_000)


def test_workers_beyond_the_open_file_limit_are_refused_with_worker_processes(monkeypatch, memory):
    """--workers 15000 --allocation uniform: 'Too many open files' once the shards went to the worker processes
    (about three descriptors per worker with two processes; 90 workers ran under ulimit -n 300, 95 did not)."""
    monkeypatch.setattr(limits.resource, "getrlimit", lambda which: (300, 300))
    monkeypatch.setattr(limits, "worker_processes", lambda config, device: config.processes or 2)
    with pytest.raises(ConfigError) as err:
        limits.check(RunConfig(workers=95, allocation="uniform"), "federated", CPU, 632, 60_000, 10_000)
    assert err.value.param == "workers" and "at most 85 with 2 worker processes" in str(err.value)
    assert "ulimit -n" in str(err.value) and "--processes 1" in str(err.value)
    limits.check(RunConfig(workers=85, allocation="uniform"), "federated", CPU, 706, 60_000, 10_000)
    limits.check(RunConfig(workers=95, allocation="uniform", processes=1), "federated", CPU, 632, 60_000, 10_000)


def test_machine_memory_is_the_lowest_limit(monkeypatch, tmp_path):
    physical = limits.machine_memory(CPU)
    assert physical > GB
    cgroup = tmp_path / "memory.max"
    monkeypatch.setattr(limits, "CGROUP_MEMORY", cgroup)
    cgroup.write_text("max\n")  # no container limit
    assert limits.machine_memory(CPU) == physical
    cgroup.write_text("1000000\n")
    assert limits.machine_memory(CPU) == 1_000_000
    cgroup.unlink()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": 5})())
    assert limits.machine_memory(torch.device("cuda")) == 5  # the GPU's, lower
