"""Where a round's time goes, before and after lock-step local training, on the anchor workload.

Workload: 10 workers, 2NN, batch 32, lr 0.05, one local epoch per round, full MNIST. "Before" is the per-worker
loop (``run_federated(..., lockstep=False)``: each worker's steps one after another, bit for bit what the engine
did before the lock-step path), "after" the lock-step path. For each, and each allocation:

- the round split by ``torch.profiler`` in one process (``processes=1``): local steps, batch gathering (the
  ``index``/``index_select`` calls that pick each batch's rows), aggregation (the strategy and the update geometry) and
  evaluation (the global model on the test set), in seconds per round and as shares;
- inter-process traffic: the round's messages (the global parameters to each worker process, the updated
  parameters back) sent through the same pipes as ``fedcore.parallel``, to a process that only echoes them;
- the seconds per round of the default path (worker processes, one per core), measured without the profiler.

    python benchmarks/profile_round.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from fedcore import engine, parallel
from fedcore.config import RunConfig
from fedcore.data import load
from fedcore.engine import run_federated
from fedcore.local import configure_torch

ALLOCATIONS = {"uniform": {"allocation": "uniform"}, "bias 1": {"allocation": "biased", "bias": 1.0}}
PHASES = {"local training": (parallel, "train_workers"), "aggregation": (engine, "update_geometry"),
          "evaluation": (engine, "_record")}


def workload(allocation: str, rounds: int) -> RunConfig:
    return RunConfig(**ALLOCATIONS[allocation], rounds=rounds, batch_size=32, lr=0.05, local_epochs=1, device="cpu")


def _labelled(name: str, function: Callable) -> Callable:
    def wrapped(*args: object, **kwargs: object) -> object:
        with record_function(name):
            return function(*args, **kwargs)
    return wrapped


@contextmanager
def phases() -> None:
    """Each phase's function wrapped in a profiler range of its name (the strategy's aggregate too)."""
    patches = [mock.patch.object(module, name, _labelled(label, getattr(module, name)))
               for label, (module, name) in PHASES.items()]
    original = engine.strategy_for

    def strategy_for(*args: object) -> object:
        strategy = original(*args)
        strategy.aggregate = _labelled("aggregation", strategy.aggregate)
        return strategy

    patches.append(mock.patch.object(engine, "strategy_for", strategy_for))
    for p in patches:
        p.start()
    try:
        yield
    finally:
        for p in patches:
            p.stop()


def split(lockstep: bool, allocation: str, rounds: int) -> dict[str, float]:
    """Seconds per round in each phase, one process, one thread (the rounds after round 0)."""
    configure_torch(1)
    data = load("mnist")
    config = workload(allocation, rounds).replace(processes=1)
    run_federated(config.replace(rounds=1), progress=False, data=data, lockstep=lockstep)  # warm up
    with phases(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run_federated(config, progress=False, data=data, lockstep=lockstep)
    total = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages()}
    gathering = sum(e.self_cpu_time_total for e in prof.key_averages()
                    if e.key in ("aten::index", "aten::index_select")) / 1e6
    out = {"local steps": total["local training"] - gathering, "batch gathering": gathering,
           "aggregation": total["aggregation"], "evaluation": total["evaluation"] * rounds / (rounds + 1)}
    return {k: v / rounds for k, v in out.items()}


def _echo(conn: multiprocessing.connection.Connection) -> None:
    while (message := conn.recv_bytes()) != b"":
        _, _, _, params, tasks = pickle.loads(message)
        conn.send_bytes(pickle.dumps(("ok", [params.clone() for _ in tasks])))


def traffic(workers: int = 10, processes: int = 2, repeats: int = 20) -> float:
    """Seconds per round to send the global parameters to each worker process with its share of the tasks and
    receive its workers' parameters back, through pipes to processes that only echo them."""
    params = torch.zeros(199_210)
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in range(processes)]
    procs = [context.Process(target=_echo, args=(child,), daemon=True) for _, child in pipes]
    for p in procs:
        p.start()
    share = [list(range(workers))[i::processes] for i in range(processes)]
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for (conn, _), tasks in zip(pipes, share, strict=True):
            conn.send_bytes(pickle.dumps(("round", 1, 0.05, params, [(k, None) for k in tasks])))
        for conn, _ in pipes:
            pickle.loads(conn.recv_bytes())
        seconds.append(time.perf_counter() - start)
    for (conn, _), p in zip(pipes, procs, strict=True):
        conn.send_bytes(b"")
        p.join()
    return statistics.median(seconds[1:])


def _wall(lockstep: bool, allocation: str, rounds: int) -> float:
    configure_torch(1)
    result = run_federated(workload(allocation, rounds), progress=False, data=load("mnist"), lockstep=lockstep)
    return statistics.median(result.column("seconds")[2:])


def wall(lockstep: bool, allocation: str, rounds: int) -> float:
    """Median seconds per round after the first, the default path (worker processes), in a fresh process."""
    from concurrent.futures import ProcessPoolExecutor  # not multiprocessing.Pool: its processes are daemonic

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_wall, lockstep, allocation, rounds).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per measurement (4 or more)")
    args = parser.parse_args()
    ipc = traffic(processes=min(os.cpu_count() or 1, 10))
    parts = ("local steps", "batch gathering", "aggregation", "evaluation")
    print(f"{'variant':<8} {'allocation':<10} " + " ".join(f"{p:>17}" for p in parts)
          + f" {'traffic':>9} {'s/round (processes)':>20}")
    for lockstep, variant in ((False, "before"), (True, "after")):
        for allocation in ALLOCATIONS:
            seconds = split(lockstep, allocation, args.rounds)
            total = sum(seconds.values())
            cells = " ".join(f"{seconds[p]:>8.3f} s ({seconds[p] / total:>4.0%})" for p in parts)
            per_round = wall(lockstep, allocation, args.rounds)
            print(f"{variant:<8} {allocation:<10} {cells} {ipc:>7.3f} s {per_round:>18.3f} s")
    print("columns: seconds per round in one process with the profiler on (and the share of that round); traffic: "
          "the round's messages through the worker processes' pipes; last: seconds per round of the default path")


if __name__ == "__main__":
    main()
