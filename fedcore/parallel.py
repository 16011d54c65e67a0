"""One run's workers across the cores: each round's local training in worker processes, one thread each.

The workers of a round are independent. The main process keeps the global model, the strategy and the
evaluation; each round it sends the global parameters (about 0.8 MB for the 2NN) and any strategy
correction to the processes, which train their share of the chosen workers in lock-step with the very
function of the one-process path (``local.train_workers``) and send the updated parameters back. The training
set reaches the processes once per run, in shared memory. With ``threads=1`` the history is bitwise that of
one process (a worker's rows of a batched matmul do not depend on the other rows), which stays for CUDA (all
the round's workers in one stack), for runs inside a pool or on a cluster (no oversubscription) and for a
script's unguarded module-level code (fedcore.processes.can_spawn).

The processes are started once (spawn, a second or two each) and kept for later runs of the same size. They
ignore Ctrl-C and exit with the main process; one that dies is a WorkerDied, said in one line.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import pickle
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

import torch

from fedcore.config import RunConfig
from fedcore.local import Shard, Task, Trained, configure_torch, train_workers
from fedcore.models import build
from fedcore.processes import WorkerDied, can_spawn, child_started, children_ignore_ctrl_c
from fedcore.training import FlatModel, steps_for

RoundFn = Callable[[int, float, torch.Tensor, list[Task]], list[Trained]]
DIED = "a fedcore worker process died (killed, or out of memory)"


def worker_processes(config: RunConfig, device: torch.device) -> int:
    """Processes for one run's local training: ``config.processes`` (default one per core), at most one
    per worker of a round; 1 on CUDA, inside a daemonic process (which may not start children), for
    ``threads`` > 1 (the worker processes train on one thread: a run keyed by more would get other bits) and
    where the children would run the calling script again (``can_spawn``, which warns once)."""
    if device.type != "cpu" or multiprocessing.current_process().daemon or config.threads > 1:
        return 1
    wanted = max(1, min(config.processes or os.cpu_count() or 1, config.per_round))
    return wanted if wanted == 1 or can_spawn() else 1


def assign(costs: list[int], processes: int) -> list[list[int]]:
    """Task indices per process: the largest task first, each to the least loaded process (deterministic)."""
    loads, out = [0] * processes, [[] for _ in range(processes)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        j = min(range(processes), key=loads.__getitem__)
        out[j].append(i)
        loads[j] += costs[i]
    return out


def _serve(conn: Connection) -> None:
    """A worker process: a ``setup`` message per run, then ``round`` messages; one reply to each; None ends it."""
    child_started()  # Ctrl-C is the main process's (it closes the pool); gone with the main process
    configure_torch(1)
    state: tuple = ()
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the main process is gone
            return
        if message is None:
            return
        try:
            if message[0] == "setup":
                _, config, train, shards, test, num_classes, lockstep = message
                state = (FlatModel(build(config.model, num_classes), num_classes), train, shards, test, config,
                         lockstep)
                reply: object = None
            else:
                _, rnd, lr, global_params, tasks = message
                model, train, shards, test, config, lockstep = state
                reply = train_workers(model, train, shards, test, config, rnd, lr, global_params, tasks, lockstep)
            conn.send_bytes(pickle.dumps(("ok", reply)))
        except Exception:
            conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))


class WorkerPool:
    """``size`` spawned processes, each on its own pipe."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
        self.size = size
        self.conns: list[Connection] = []
        self.procs = []
        with children_ignore_ctrl_c():
            for _ in range(size):
                parent, child = context.Pipe()
                proc = context.Process(target=_serve, args=(child,), daemon=True, name="fedcore-worker")
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def _replies(self, conns: list[Connection]) -> list[object]:
        out = []
        for conn in conns:
            try:
                status, reply = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError) as err:
                raise WorkerDied(DIED) from err
            if status == "error":
                raise RuntimeError(f"local training failed in a worker process:\n{reply}")
            out.append(reply)
        return out

    def setup(self, config: RunConfig, train: Shard, shards: list[torch.Tensor], test: Shard, num_classes: int,
              lockstep: bool) -> None:
        """Send a run's settings, training set and shards (moved to shared memory, so each process maps them)."""
        for tensor in [*train, *shards, *test]:
            tensor.share_memory_()

        def exchange() -> list[object]:
            for conn in self.conns:
                conn.send(("setup", config, train, shards, test, num_classes, lockstep))  # shared memory
            return self._replies(self.conns)

        self._guarded(exchange)

    def train_round(
        self, config: RunConfig, shards: list[torch.Tensor], rnd: int, lr: float, global_params: torch.Tensor,
        tasks: list[Task],
    ) -> list[Trained]:
        """The chosen workers' local training, balanced over the processes by samples; results in task order."""
        batch = config.batch_size
        costs = [steps_for(len(shards[k]), batch, config.local_epochs, config.local_steps)
                 * (len(shards[k]) if batch is None else batch) for k, _ in tasks]
        parts = [p for p in assign(costs, self.size) if p]
        conns = self.conns[: len(parts)]

        def exchange() -> list[object]:
            for conn, part in zip(conns, parts, strict=True):
                conn.send_bytes(pickle.dumps(("round", rnd, lr, global_params, [tasks[i] for i in part])))
            return self._replies(conns)

        out: list[Trained | None] = [None] * len(tasks)
        for part, trained in zip(parts, self._guarded(exchange), strict=True):
            for i, t in zip(part, trained, strict=True):
                out[i] = t
        return out

    def _guarded(self, exchange: Callable[[], list[object]]) -> list[object]:
        """Run one exchange; if it does not finish (error, interrupt), the pool is closed: no stale replies."""
        try:
            return exchange()
        except (BrokenPipeError, ConnectionResetError) as err:  # a process died before it had its message
            self.close(wait=False)
            raise WorkerDied(DIED) from err
        except BaseException:
            self.close(wait=False)
            raise

    def close(self, wait: bool = True) -> None:
        """Stop the processes: asked to finish (``wait``, a few seconds at most), else terminated."""
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if wait:
                try:
                    conn.send(None)
                except OSError:
                    pass
                proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
            conn.close()
        self.conns, self.procs = [], []


_POOLS: dict[int, WorkerPool] = {}


def shared_pool(size: int) -> WorkerPool:
    """The process-wide pool of ``size`` processes (started on first use; a pool of another size is closed)."""
    pool = _POOLS.get(size)
    if pool is None or not pool.procs or not pool.alive():
        close_pools()
        pool = _POOLS[size] = WorkerPool(size)
    return pool


@atexit.register
def close_pools() -> None:
    """Stop the shared pool's processes."""
    while _POOLS:
        _POOLS.popitem()[1].close()


def local_training(
    config: RunConfig, device: torch.device, model: FlatModel, train: Shard, shards: list[torch.Tensor], test: Shard,
    lockstep: bool = True,
) -> RoundFn:
    """The function that trains a round's chosen workers: in this process, or across worker processes."""
    processes = worker_processes(config, device)
    if processes <= 1:
        return lambda rnd, lr, global_params, tasks: train_workers(model, train, shards, test, config, rnd, lr,
                                                                   global_params, tasks, lockstep)
    pool = shared_pool(processes)
    # copies: the cached dataset's own tensors stay where they are
    train, test = (train[0].clone(), train[1].clone()), (test[0].clone(), test[1].clone())
    pool.setup(config, train, shards, test, model.num_classes, lockstep)
    return lambda rnd, lr, global_params, tasks: pool.train_round(config, shards, rnd, lr, global_params, tasks)
