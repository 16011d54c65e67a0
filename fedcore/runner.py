"""Runs through the store: a stored run comes back at once; missing ones train, several at a time across the cores."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm import tqdm

from fedcore.config import RunConfig
from fedcore.engine import TrainingDiverged, run_centralized, run_divergence, run_federated
from fedcore.results import RunResult
from fedcore.store import RunStore

KINDS = {"federated": run_federated, "centralized": run_centralized, "divergence": run_divergence}


def run(
    config: RunConfig,
    kind: str = "federated",
    store: RunStore | None = None,
    progress: bool = True,
    allow_divergence: bool = False,
) -> RunResult:
    """The stored result of ``config``, training it first if it is not stored yet.

    A run whose loss became NaN or infinite is stored with the rounds before it, marked ``diverged``,
    and raises TrainingDiverged unless ``allow_divergence`` (a sweep then shows where it stopped)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    store = store or RunStore()
    result = store.get(config.key(kind))
    if result is None:
        try:
            result = KINDS[kind](config, progress=progress)
        except TrainingDiverged as err:
            result = err.result
        store.put(result)
    if result.diverged and not allow_divergence:
        raise TrainingDiverged(result.diverged, result)
    return result


def _run_in_pool(config: RunConfig, kind: str, root: str, allow_divergence: bool) -> RunResult:
    return run(config.replace(threads=1), kind, RunStore(root), progress=False, allow_divergence=allow_divergence)


def run_many(
    jobs: Sequence[tuple[RunConfig, str]],
    store: RunStore | None = None,
    processes: int | None = None,
    progress: bool = True,
    allow_divergence: bool = False,
) -> list[RunResult]:
    """Results of several (config, kind) pairs, in order; missing runs train in parallel, one thread each."""
    store = store or RunStore()
    results: list[RunResult | None] = [store.get(c.key(k)) for c, k in jobs]
    missing = [i for i, r in enumerate(results) if r is None]
    processes = min(processes or os.cpu_count() or 1, len(missing))
    if processes <= 1:
        for i in tqdm(missing, desc="runs", unit="run", disable=not progress or not missing):
            results[i] = run(*jobs[i], store=store, progress=progress, allow_divergence=allow_divergence)
        return results
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch's thread pools exist
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = {pool.submit(_run_in_pool, *jobs[i], str(store.root), allow_divergence): i for i in missing}
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", unit="run", disable=not progress):
            results[futures[future]] = future.result()
    return results
