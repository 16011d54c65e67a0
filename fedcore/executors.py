"""Where several runs train: a local spawn process pool, or a Dask cluster named by $FEDCORE_SCHEDULER or
``--scheduler tcp://HOST:PORT``.

Both are ``concurrent.futures`` executors, so ``run_many`` has one code path: one task per missing run,
one thread each, its RunResult sent back to the client, which writes it to its own run store. The local
pool is started once per size and kept for the process's life (starting one takes seconds; a notebook calls
``run_many`` many times); its processes ignore Ctrl-C and exit with the main process, and a call stopped
early (an error, Ctrl-C, SIGTERM under the command line) terminates them. Cluster workers need the dataset
($FEDCORE_DATA_DIR on each, or a download), not a shared filesystem; Dask reschedules the task of a worker
that dies. A scheduler that cannot be used is a SchedulerError naming it: a malformed address (at once), no
answer within CONNECT_TIMEOUT_S, no worker within the worker timeout, the scheduler lost midway, or (a
watchdog, ``Watched``) no worker left for the worker timeout while tasks are out: the tasks still out are
cancelled, so the caller stops, keeping what came back. Dask's client logs nothing meanwhile (a lost scheduler
is said once, by the caller). The cluster path needs the ``cluster`` extra (dask, distributed).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from fedcore.processes import child_started

if TYPE_CHECKING:
    from distributed import Client

SCHEDULER_ENV = "FEDCORE_SCHEDULER"
CONNECT_TIMEOUT_S = 10.0
WORKER_TIMEOUT_S = 60.0  # how long a scheduler may have no worker (--worker-timeout)
WATCH_INTERVAL_S = 1.0  # how often the watchdog counts a cluster's workers
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")  # Dask's network protocols
FROM = f"(from --scheduler or ${SCHEDULER_ENV})"


class SchedulerError(ConnectionError):
    """The Dask scheduler named by $FEDCORE_SCHEDULER or --scheduler cannot be used."""


def scheduler_address(explicit: str | None = None) -> str | None:
    """The scheduler to use: the argument, else $FEDCORE_SCHEDULER; None means the local pool."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


def check_address(address: str) -> None:
    """SchedulerError unless ``address`` has the form of a Dask scheduler's, [SCHEME://]HOST:PORT (before any
    connection attempt, which would take seconds to fail)."""
    scheme, sep, location = address.partition("://")
    if not sep:
        scheme, location = "tcp", address
    host, _, port = location.rpartition(":")
    if scheme in SCHEMES and host.strip("[]") and " " not in host and port.isdigit() and 0 < int(port) < 65536:
        return
    hint = " (http:// is the dashboard's; the scheduler's own address is tcp://HOST:8786 by default)" \
        if scheme in ("http", "https") else ""
    raise SchedulerError(f"scheduler must be a Dask scheduler's address, SCHEME://HOST:PORT with SCHEME one of "
                         f"{', '.join(SCHEMES)}, e.g. tcp://127.0.0.1:8786; got {address!r} {FROM}{hint}")


@contextmanager
def _quiet_dask(*names: str) -> Iterator[None]:
    """Dask's own log lines silenced (by default all of them; distributed's config gives its client's logger a
    level of its own): a failed connection or a lost scheduler is reported once, by us."""
    loggers = [logging.getLogger(name) for name in names or ("distributed", "distributed.client")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def connect(address: str, worker_timeout: float = WORKER_TIMEOUT_S) -> Client:
    """A client of the Dask scheduler at ``address`` with at least one worker, or a SchedulerError naming it
    (before any work): malformed, no answer within CONNECT_TIMEOUT_S, or no worker within ``worker_timeout``."""
    check_address(address)
    try:
        from distributed import Client
    except ImportError as err:
        raise SchedulerError(f"scheduler {address!r} {FROM} needs Dask: pip install -e '.[cluster]'") from err
    try:
        with _quiet_dask():
            client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as err:  # OSError / TimeoutError when nothing answers
        raise SchedulerError(f"no Dask scheduler answered at {address!r} {FROM} "
                             f"within {CONNECT_TIMEOUT_S:g} s: {err}") from err
    try:
        client.wait_for_workers(1, timeout=worker_timeout)
    except TimeoutError as err:
        close(client)
        raise SchedulerError(f"no Dask worker joined the scheduler at {address!r} {FROM} within "
                             f"{worker_timeout:g} s (--worker-timeout): start some with 'dask worker {address}'"
                             ) from err
    return client


def close(client: Client) -> None:
    """Close a client; where the scheduler is gone, without Dask's tracebacks about reconnecting."""
    with _quiet_dask():
        client.close(timeout=CONNECT_TIMEOUT_S)


_LOCAL_POOLS: dict[int, ProcessPoolExecutor] = {}


def is_kept(size: int) -> bool:
    """Whether this process keeps a local pool of ``size`` from an earlier call."""
    return size in _LOCAL_POOLS


def local_pool(size: int) -> ProcessPoolExecutor:
    """The process's spawn pool of ``size`` processes, started on first use (processes start as tasks come)
    and kept for later calls, replaced if one of its processes died meanwhile; concurrent.futures shuts it
    down when the interpreter exits."""
    kept = _LOCAL_POOLS.get(size)
    if kept is not None and (kept._broken or not all(p.is_alive() for p in (kept._processes or {}).values())):
        stop(kept)  # private attributes: no public way to ask whether a process died before Python 3.14
    if size not in _LOCAL_POOLS:
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
        _LOCAL_POOLS[size] = ProcessPoolExecutor(size, mp_context=context, initializer=child_started)
    return _LOCAL_POOLS[size]


def stop(pool: ProcessPoolExecutor) -> None:
    """Stop a local pool now, its processes terminated (a task cannot be cancelled once started), and forget
    it: the next call starts a fresh one."""
    for size, kept in list(_LOCAL_POOLS.items()):
        if kept is pool:
            del _LOCAL_POOLS[size]
    processes = list((pool._processes or {}).values())  # no public way before Python 3.14's terminate_workers
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()


class Watched(Executor):
    """A Dask client's executor with a watchdog: where the cluster has had no worker for ``worker_timeout``
    seconds while tasks are out (every worker died), the tasks are cancelled, which ends the caller's wait,
    and ``lost`` says why."""

    def __init__(self, client: Client, address: str, worker_timeout: float) -> None:
        self._client, self._inner = client, client.get_executor(pure=False)  # equal configs: separate tasks
        self._address, self._timeout = address, worker_timeout
        self._stopped = threading.Event()
        self.lost: str | None = None
        threading.Thread(target=self._watch, name="fedcore-cluster-watchdog", daemon=True).start()

    def submit(self, fn: Callable[..., object], /, *args: object, **kwargs: object) -> Future:
        return self._inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop watching; without ``wait``, cancel the tasks still out."""
        self._stopped.set()
        self._inner.shutdown(wait=wait)

    def _workers(self) -> int | None:
        """The cluster's workers now; None where the scheduler does not answer (its loss is the caller's)."""
        try:
            return len(self._client.nthreads())
        except Exception:  # any failure to ask: the scheduler gone, the client closing
            return None

    def _watch(self) -> None:
        seen = time.monotonic()
        while not self._stopped.wait(WATCH_INTERVAL_S):
            if self._workers() != 0:
                seen = time.monotonic()
            elif time.monotonic() - seen >= self._timeout:
                self.lost = (f"the Dask scheduler at {self._address!r} {FROM} has had no worker for "
                             f"{self._timeout:g} s (--worker-timeout): the runs still out did not come back (those "
                             "that did are stored: start some workers and start again to resume)")
                self.shutdown(wait=False)
                return


@contextmanager
def executor(processes: int, address: str | None, worker_timeout: float = WORKER_TIMEOUT_S) -> Iterator[Executor]:
    """The cluster at ``address`` as an executor, else the local spawn pool of ``processes``. If the caller
    stops early (an error, Ctrl-C, a generator closed), the work still pending is cancelled; a local pool is
    stopped (``stop``)."""
    if address is None:
        pool = local_pool(processes)
        try:
            yield pool
        except BaseException:
            stop(pool)
            raise
        return
    client = connect(address, worker_timeout)
    try:
        pool = Watched(client, address, worker_timeout)
        try:
            with _quiet_dask("distributed.client"):  # a lost scheduler: no reconnection errors, our one line
                yield pool
        except SchedulerError as err:  # the tasks the watchdog cancelled: say why
            if pool.lost is None:
                raise
            raise SchedulerError(pool.lost) from err
        finally:
            pool.shutdown(wait=False)  # cancels what is left
    finally:
        close(client)


@contextmanager
def command_line_cluster(folder: Path, workers: int = 1) -> Iterator[tuple[str, subprocess.Popen, subprocess.Popen]]:
    """A Dask scheduler and ``workers`` one-thread worker processes started as Dask's command line starts them
    (``dask scheduler``, ``dask worker --nworkers``) on 127.0.0.1, with the scheduler's file in ``folder``:
    (address, the scheduler's process, the workers' leader, whose process group holds every nanny and worker).
    All are killed on the way out. The workers inherit this process's environment ($FEDCORE_DATA_DIR, kernels)."""
    file = folder / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(file)],
                                 stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers",
                                   str(workers), "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                  stderr=subprocess.DEVNULL, start_new_session=True)  # one group: killed at once
        yield address, scheduler, worker
    finally:
        scheduler.kill()
        if worker is not None:
            with suppress(ProcessLookupError):  # killed already
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=60)
