"""Runs through the store: a stored run comes back at once; missing ones train, several at a time across the cores."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm import tqdm

from fedcore import data as datasets
from fedcore.config import ConfigError, RunConfig
from fedcore.engine import (
    TrainingDiverged,
    allocate,
    resolve_device,
    run_centralized,
    run_divergence,
    run_federated,
)
from fedcore.results import RunResult
from fedcore.store import RunStore

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
    raises ConfigError for what would fail later. A run whose loss became NaN or infinite is stored
    with the rounds before it, marked ``diverged``, and raises TrainingDiverged unless
    ``allow_divergence`` (a sweep then shows where it stopped)."""
    store = store or RunStore()
    result = None if force else store.get(config, kind)
    if result is None:
        check(config, kind, store)
        started = time.time()
        try:
            result = KINDS[kind](config, progress=progress)
        except TrainingDiverged as err:
            result = err.result
        store.put(result)
        store.remove_stale_temporaries(before=started)
    if result.diverged and not allow_divergence:
        raise TrainingDiverged(result.diverged, result)
    return result


def check(config: RunConfig, kind: str, store: RunStore) -> None:
    """Check, before any training, what would otherwise fail during it: the store's folder is writable,
    the device exists, the data load (whole files) and the allocation gives every worker data.
    Raises ConfigError naming the parameter (``runs_dir``, ``device``, ``data_dir``, ``workers``, ...)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    store.check_writable()
    resolve_device(config.device)
    try:
        data = datasets.load(config.dataset, config.data_dir)
    except (datasets.DataNotFoundError, datasets.DataDamagedError) as err:
        raise ConfigError(f"data_dir must hold the {config.dataset} dataset: {err}", param="data_dir") from err
    if kind != "centralized":
        allocate(config, data.train_y)


def _run_in_pool(config: RunConfig, kind: str, root: str, allow_divergence: bool) -> RunResult:
    return run(config, kind, RunStore(root), progress=False, allow_divergence=allow_divergence)


def run_many(
    jobs: Sequence[tuple[RunConfig, str]],
    store: RunStore | None = None,
    processes: int | None = None,
    progress: bool = True,
    allow_divergence: bool = False,
) -> list[RunResult]:
    """Results of several (config, kind) pairs, in order; missing runs train in parallel, one thread each."""
    store = store or RunStore()
    results: list[RunResult | None] = [store.get(c, k) for c, k in jobs]
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
