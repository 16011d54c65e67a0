"""Where several runs train: a local spawn process pool, or a Dask cluster named by $FEDCORE_SCHEDULER or
``--scheduler tcp://HOST:PORT``.

Both are ``concurrent.futures`` executors, so ``run_many`` has one code path: one task per missing run,
one thread each, its RunResult sent back to the client, which writes it to its own run store. Cluster
workers need the dataset ($FEDCORE_DATA_DIR on each, or a download), not a shared filesystem; Dask
reschedules the task of a worker that dies. The cluster path needs the ``cluster`` extra (dask, distributed).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

SCHEDULER_ENV = "FEDCORE_SCHEDULER"
CONNECT_TIMEOUT_S = 10.0


class SchedulerError(ConnectionError):
    """The Dask scheduler named by $FEDCORE_SCHEDULER or --scheduler cannot be used."""


def scheduler_address(explicit: str | None = None) -> str | None:
    """The scheduler to use: the argument, else $FEDCORE_SCHEDULER; None means the local pool."""
    return explicit or os.environ.get(SCHEDULER_ENV) or None


def connect(address: str) -> Client:
    """A client of the Dask scheduler at ``address``, or a SchedulerError naming it (before any work)."""
    try:
        from distributed import Client
    except ImportError as err:
        raise SchedulerError(f"scheduler {address!r} (from --scheduler or ${SCHEDULER_ENV}) needs Dask: "
                             "pip install -e '.[cluster]'") from err
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as err:  # OSError / TimeoutError when nothing answers, ValueError for a malformed address
        raise SchedulerError(f"no Dask scheduler answered at {address!r} (from --scheduler or ${SCHEDULER_ENV}) "
                             f"within {CONNECT_TIMEOUT_S:g} s: {err}") from err


@contextmanager
def executor(processes: int, address: str | None) -> Iterator[Executor]:
    """The cluster at ``address`` as an executor, else a local spawn pool of ``processes``. Tasks still
    pending when the caller stops early (an error, Ctrl-C) are cancelled."""
    if address is None:
        pool: Executor = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return
    client = connect(address)
    try:
        pool = client.get_executor(pure=False)  # equal configs are still separate tasks
        try:
            yield pool
        finally:
            pool.shutdown(wait=False)  # cancels what is left
    finally:
        client.close()
