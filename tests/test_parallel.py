import pytest
import torch

from fedcore import RunConfig
from fedcore.engine import run_federated
from fedcore.parallel import assign, shared_pool, worker_processes


def _history(result):
    rounds = [{k: v for k, v in row.items() if k != "seconds"} for row in result.rounds]
    return rounds, result.classes, result.workers, result.confusion


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "scaffold"])
def test_worker_processes_give_bitwise_the_sequential_history(toy, strategy):
    config = RunConfig(bias=0.8, rounds=3, participation=0.7, local_epochs=None, local_steps=6, strategy=strategy,
                       mu=0.1, eval_workers=50, device="cpu", threads=1)
    sequential = run_federated(config.replace(processes=1), progress=False, data=toy)
    parallel = run_federated(config.replace(processes=2), progress=False, data=toy)
    assert _history(parallel) == _history(sequential)
    assert parallel.rounds[-1]["test_loss"] < parallel.rounds[0]["test_loss"]  # it trained


def test_tasks_are_balanced_over_the_processes():
    costs = [5, 9, 1, 7, 3, 3]
    parts = assign(costs, 2)
    assert sorted(i for p in parts for i in p) == list(range(6))
    assert [sum(costs[i] for i in p) for p in parts] == [15, 13]  # largest first: 9+3+3 and 7+5+1
    assert assign(costs, 2) == parts  # deterministic
    assert assign([4, 4], 3)[2] == []


def test_one_process_per_core_at_most_one_per_worker_and_none_on_cuda():
    config = RunConfig(processes=8)
    assert config.replace(participation=0.3).per_round == 3
    assert worker_processes(config.replace(participation=0.3), torch.device("cpu")) == 3
    assert worker_processes(config, torch.device("cpu")) == 8
    assert worker_processes(config, torch.device("cuda")) == 1
    assert worker_processes(config.replace(threads=2), torch.device("cpu")) == 1  # threads are in the key
    assert worker_processes(config.replace(processes=1), torch.device("cpu")) == 1


def test_a_failing_worker_process_raises_its_traceback_and_the_pool_is_replaced(toy):
    config = RunConfig(rounds=1, local_epochs=None, local_steps=2, device="cpu", threads=1, processes=2)
    run_federated(config, progress=False, data=toy)  # the shared pool now holds this run's ten shards
    pool = shared_pool(2)
    with pytest.raises(RuntimeError, match="IndexError"):
        pool.train_round(config, [torch.arange(8)] * 12, 1, 0.1, torch.zeros(1), [(11, None)])
    assert not pool.procs  # closed: no stale replies left in its pipes
    assert shared_pool(2) is not pool and shared_pool(2).alive()
    assert run_federated(config, progress=False, data=toy).rounds[-1]["round"] == 1
