"""Runs through the store: a stored run comes back at once; missing ones train, several at a time across the
cores or a Dask cluster (fedcore.executors)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from fedcore import data as datasets
from fedcore import limits, request_log
from fedcore.config import ConfigError, RunConfig
from fedcore.engine import (
    TrainingDiverged,
    allocate,
    resolve_device,
    run_centralized,
    run_divergence,
    run_federated,
)
from fedcore.executors import WORKER_TIMEOUT_S, SchedulerError, executor, is_kept, scheduler_address, stop
from fedcore.processes import WorkerDied, can_spawn, children_ignore_ctrl_c
from fedcore.results import RunResult
from fedcore.store import RunStore, WriteError

KINDS = {"federated": run_federated, "centralized": run_centralized, "divergence": run_divergence}


def run(
    config: RunConfig,
    kind: str = "federated",
    store: RunStore | None = None,
    progress: bool = True,
    allow_divergence: bool = False,
    force: bool = False,
) -> RunResult:
    """The stored result of ``config``, training it first if it is not stored yet (or with ``force``).

    A stored file that is not a whole run of ``config`` is named in a warning and replaced; one recorded
    with less detail (``eval_workers``) than asked is replaced silently. Before training, ``check``
    raises ConfigError for what would fail later; a result that cannot be written all the same is a
    WriteError naming the file. A run whose loss became NaN or infinite is stored
    with the rounds before it, marked ``diverged``, and raises TrainingDiverged unless
    ``allow_divergence`` (a sweep then shows where it stopped)."""
    store = store or RunStore()
    request_log.note([(config, kind)], store.root)
    result = None if force else store.get(config, kind)
    if result is None:
        check(config, kind, store)
        started = time.time()
        result = train(config, kind, progress)
        store.put(result)
        store.remove_stale_temporaries(before=started)
    if result.diverged and not allow_divergence:
        raise TrainingDiverged(result.diverged, result)
    return result


def train(config: RunConfig, kind: str, progress: bool) -> RunResult:
    """Train one run, timed whole (``wall_seconds``); a run that diverged comes back marked."""
    began = time.perf_counter()
    try:
        result = KINDS[kind](config, progress=progress)
    except TrainingDiverged as err:
        result = err.result
    result.wall_seconds = time.perf_counter() - began
    return result


def check(config: RunConfig, kind: str, store: RunStore) -> None:
    """Check, before any training, what would otherwise fail during it: the store's folder is writable and
    has room for the run, the device exists, the data load (whole files), the allocation gives every
    worker data and the machine has the memory and open files the run needs (fedcore.limits). Raises
    ConfigError naming the parameter (``runs_dir``, ``device``, ``data_dir``, ``workers``, ``local_steps``, ...).
    Only a run that trains needs it: a run the store holds is served without (a read-only store serves it)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    store.check_writable()
    device = resolve_device(config.device)
    try:
        data = datasets.load(config.dataset, config.data_dir)
    except (datasets.DataNotFoundError, datasets.DataDamagedError, datasets.DataUnreadableError) as err:
        raise ConfigError(f"data_dir must hold the {config.dataset} dataset: {err}", param="data_dir") from err
    largest = len(data.train_y) if kind == "centralized" else max(len(s) for s in allocate(config, data.train_y)[1])
    limits.check(config, kind, device, largest, len(data.train_y), len(data.test_y))
    store.check_room([(config, kind)])


class _Nowhere(RunStore):
    """A store that holds and keeps nothing: on a pool or cluster worker, results go back to the client."""

    def get(self, *args: object, **kwargs: object) -> None:
        return None

    def put(self, result: RunResult, *args: object, **kwargs: object) -> Path:
        return self.path(result.key)

    def check_writable(self) -> None:
        return None

    def check_room(self, jobs: Sequence[tuple[RunConfig, str]]) -> None:
        return None

    def remove_stale_temporaries(self, before: float) -> list[Path]:
        return []


def train_one(config: RunConfig, kind: str) -> RunResult:
    """One run as a pool or cluster task: its configured threads (one by default), no worker processes of its
    own (no oversubscription), nothing written; the result comes back, diverged or not."""
    check(config, kind, _Nowhere())
    return train(config.replace(processes=1), kind, False)


Outcome = RunResult | Exception


def completed(
    jobs: Sequence[tuple[RunConfig, str]],
    store: RunStore | None = None,
    processes: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    worker_timeout: float = WORKER_TIMEOUT_S,
) -> Iterator[tuple[int, Outcome]]:
    """(index, result or the exception it raised) for each (config, kind) job: stored runs at once, then the
    missing ones as they finish, each written to ``store`` as it comes back (an interrupted call loses
    only the runs in flight). Diverged runs come back as results (``result.diverged`` says why).

    Where they train: on the Dask cluster at ``scheduler`` (default $FEDCORE_SCHEDULER; SchedulerError when
    it has no worker within ``worker_timeout`` seconds, or is lost), else in the process's local spawn pool
    of ``processes`` (default: the cores divided by the runs' threads; kept for later calls), each run on its
    own threads; a single missing run trains here, across its own worker processes (fedcore.parallel, for
    one-thread runs), with ``progress`` bars, and so do all of them when called from a script's unguarded
    module-level code (fedcore.processes.can_spawn). Before any training, the store must be writable with
    room for the missing runs and (locally) ``check`` passes for each, else ConfigError; a result that
    cannot be written stops the call with a WriteError. In a book build every job is noted as the page's
    request (fedcore.request_log)."""
    store = store or RunStore()
    request_log.note(jobs, store.root)
    missing = []
    for i, (config, kind) in enumerate(jobs):
        stored = store.get(config, kind)
        if stored is None:
            missing.append(i)
        else:
            yield i, stored
    if not missing:
        return
    address = scheduler_address(scheduler)
    store.check_writable()
    if address is None:  # a cluster's workers hold the data; here, check each run before any trains
        for i in missing:
            check(*jobs[i], store)
    store.check_room([jobs[i] for i in missing])
    threads = max(jobs[i][0].threads for i in missing)  # one pool task per core's worth of threads
    pool_size = processes or max(1, (os.cpu_count() or 1) // threads)
    if address is None and (min(pool_size, len(missing)) <= 1 or not can_spawn()):
        for i in missing:
            try:
                outcome: Outcome = run(*jobs[i], store=store, progress=progress, allow_divergence=True)
            except WriteError:
                raise
            except Exception as err:
                outcome = err
            yield i, outcome
        return
    yield from _pooled(jobs, missing, store, pool_size, address, worker_timeout)


class _StalePool(Exception):
    """A kept local pool broke before any of the call's tasks came back: a process died while it was idle."""


def _pooled(
    jobs: Sequence[tuple[RunConfig, str]], missing: list[int], store: RunStore, pool_size: int,
    address: str | None, worker_timeout: float,
) -> Iterator[tuple[int, Outcome]]:
    """``completed``'s missing runs as pool or cluster tasks, each stored as it comes back. A kept local pool
    found broken before anything came back (one of its processes died while idle, unseen until now) is replaced
    and the tasks given to the new one."""
    tasks = (jobs, missing, store, pool_size, address, worker_timeout)
    try:
        yield from _tasks(*tasks, reused=address is None and is_kept(pool_size))
    except _StalePool:
        yield from _tasks(*tasks, reused=False)


def _tasks(
    jobs: Sequence[tuple[RunConfig, str]], missing: list[int], store: RunStore, pool_size: int,
    address: str | None, worker_timeout: float, reused: bool,
) -> Iterator[tuple[int, Outcome]]:
    with executor(pool_size, address, worker_timeout) as pool:
        with children_ignore_ctrl_c():  # the local pool's processes start as tasks are submitted
            futures = {pool.submit(train_one, *jobs[i]): i for i in missing}
        broken = False
        for done, future in enumerate(as_completed(futures)):
            try:
                outcome: Outcome = future.result()
            except CancelledError as err:  # only Dask cancels a task we wait for: its scheduler is gone
                raise SchedulerError(f"lost the Dask scheduler at {address!r}: {len(missing) - done} runs did not "
                                     "come back (those that did are stored: start again to resume)") from err
            except BrokenProcessPool:
                if reused and done == 0:
                    stop(pool)
                    raise _StalePool from None
                broken = True
                outcome = WorkerDied("a process of the local pool died (killed, or out of memory)")
            except Exception as err:
                outcome = err
            if isinstance(outcome, RunResult):
                store.put(outcome)
            yield futures[future], outcome
        if broken:
            stop(pool)


def run_many(
    jobs: Sequence[tuple[RunConfig, str]],
    store: RunStore | None = None,
    processes: int | None = None,
    progress: bool = True,
    allow_divergence: bool = False,
    scheduler: str | None = None,
    worker_timeout: float = WORKER_TIMEOUT_S,
) -> list[RunResult]:
    """Results of several (config, kind) pairs, in order; missing runs train as in ``completed``: in a local
    pool (kept for later calls) or on a Dask cluster, one thread each. The first failure (or, unless
    ``allow_divergence``, divergence) is raised once the run is stored."""
    results: list[RunResult | None] = [None] * len(jobs)
    # shown after a second only: a call whose runs are all stored (a notebook re-executed) prints no bar
    with tqdm(total=len(jobs), desc="runs", unit="run", disable=not progress, delay=1.0) as bar:
        for i, outcome in completed(jobs, store, processes, scheduler, progress, worker_timeout):
            if isinstance(outcome, Exception):
                raise outcome
            if outcome.diverged and not allow_divergence:
                raise TrainingDiverged(outcome.diverged, outcome)
            results[i] = outcome
            bar.update()
    return results
