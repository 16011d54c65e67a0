"""Seconds per run of a sweep through the local process pool and through a local Dask cluster, at equal cores.

Eight short runs (10 workers, 2NN, batch 32, 10 rounds of 50 local steps, full MNIST, biases 0 to 1) go
through ``run_many`` twice each way, into fresh run stores: a spawn pool of one process per core, then a
``LocalCluster`` of as many single-thread worker processes. Each figure includes the workers' start-up
work (importing torch, loading MNIST), which a warm cluster has already done on the second pass; the
cluster's own start is timed apart. The cluster's overhead per run is its seconds per run minus the pool's.

Measured on a two-vCPU machine: 2.3 s per run both ways when quiet (cluster +2.9% and -5.8%); under
load from other sessions the two differ by up to a third either way, in both directions.

    python benchmarks/sweep_speed.py [--runs 8] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from fedcore.config import RunConfig
from fedcore.executors import SCHEDULER_ENV
from fedcore.runner import run_many
from fedcore.store import RunStore


def jobs(runs: int, rounds: int) -> list[tuple[RunConfig, str]]:
    base = RunConfig(rounds=rounds, local_epochs=None, local_steps=50, batch_size=32, device="cpu")
    return [(base.replace(bias=i / max(1, runs - 1)), "federated") for i in range(runs)]


def seconds_per_run(sweep: list[tuple[RunConfig, str]], processes: int, scheduler: str | None) -> float:
    """Wall seconds of the whole sweep into an empty store, divided by its runs."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_many(sweep, RunStore(tmp), processes=processes, scheduler=scheduler, progress=False)
        return (time.perf_counter() - start) / len(sweep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="runs in the sweep")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per run")
    args = parser.parse_args()
    from distributed import LocalCluster  # here, not at the top: the pool's spawned processes re-import this module

    os.environ.pop(SCHEDULER_ENV, None)  # the pool rows use the local pool
    cores = os.cpu_count() or 1
    sweep = jobs(args.runs, args.rounds)
    start = time.perf_counter()
    with LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        print(f"{cores} cores; local cluster of {cores} one-thread workers started in "
              f"{time.perf_counter() - start:.1f} s; {len(sweep)} runs of {args.rounds} rounds")
        print(f"{'pass':<5} {'pool s/run':>11} {'cluster s/run':>14} {'overhead s/run':>15} {'overhead':>9}")
        for i in (1, 2):
            pool = seconds_per_run(sweep, cores, None)
            remote = seconds_per_run(sweep, cores, cluster.scheduler_address)
            print(f"{i:<5} {pool:>11.2f} {remote:>14.2f} {remote - pool:>15.2f} {(remote - pool) / pool:>9.1%}")


if __name__ == "__main__":
    main()
