"""Runs through the store: a stored run comes back at once; missing ones train, several at a time across the cores."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm import tqdm

from fedcore.config import RunConfig
from fedcore.engine import run_centralized, run_federated
from fedcore.results import RunResult
from fedcore.store import RunStore

KINDS = {"federated": run_federated, "centralized": run_centralized}


def run(config: RunConfig, kind: str = "federated", store: RunStore | None = None, progress: bool = True) -> RunResult:
    """The stored result of ``config``, training it first if it is not stored yet."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    store = store or RunStore()
    result = store.get(config.key(kind))
    if result is None:
        result = KINDS[kind](config, progress=progress)
        store.put(result)
    return result


def _run_in_pool(config: RunConfig, kind: str, root: str) -> RunResult:
    return run(config.replace(threads=1), kind, RunStore(root), progress=False)


def run_many(
    jobs: Sequence[tuple[RunConfig, str]],
    store: RunStore | None = None,
    processes: int | None = None,
    progress: bool = True,
) -> list[RunResult]:
    """Results of several (config, kind) pairs, in order; missing runs train in parallel, one thread each."""
    store = store or RunStore()
    results: list[RunResult | None] = [store.get(c.key(k)) for c, k in jobs]
    missing = [i for i, r in enumerate(results) if r is None]
    processes = min(processes or os.cpu_count() or 1, len(missing))
    if processes <= 1:
        for i in tqdm(missing, desc="runs", unit="run", disable=not progress or not missing):
            results[i] = run(*jobs[i], store=store, progress=progress)
        return results
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = {pool.submit(_run_in_pool, *jobs[i], str(store.root)): i for i in missing}
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run", disable=not progress):
            results[futures[future]] = future.result()
    return results
