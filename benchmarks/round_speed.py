"""Seconds per round of the engine and of the textbook reference on the issue's workload, as a share of peak.

Workload (the anchor): 10 workers, 2NN, batch 32, lr 0.05, one local epoch per round, full MNIST, uniform and
bias 1. One round is 6 x 199,210 parameters x 60,000 samples = 71.7 GFLOP. Every figure is measured in this
run, side by side: the machine's float32 matmul peak (2048 x 2048) and each variant's median seconds per
round after the first. Each variant runs in its own process, so its peak memory is its own (for the worker
processes, the main process's). The variants:

- ``workers``: the default, one worker process per core, one thread each, each training its share of the
  round's workers in lock-step (fedcore.local);
- ``per-worker``: the same processes, each training its workers one after another (``lockstep=False``, what
  the engine did before lock-step);
- ``threads``: one process, lock-step, every core as threads of it (another run key: the thread count);
- ``reference``: the textbook loop (fedcore.reference), one process, every core as threads;
- ``2 at once``: two independent runs, one thread each, as ``run_many`` trains the book's runs.

Run it twice on a quiet machine before reading much into one figure: two-vCPU machines of one kind have been
measured a factor two apart in peak, and the two-thread rows vary most from run to run.

    python benchmarks/round_speed.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from fedcore.config import RunConfig
from fedcore.data import load
from fedcore.engine import run_federated
from fedcore.local import configure_torch
from fedcore.reference import run_reference
from fedcore.runner import run_many
from fedcore.store import RunStore

GFLOP_PER_ROUND = 6 * 199_210 * 60_000 / 1e9


def matmul_peak(threads: int) -> float:
    """GFLOP/s of a 2048 x 2048 float32 matmul with ``threads`` threads (best of 10)."""
    configure_torch(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(12):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


ALLOCATIONS = {"uniform": {"allocation": "uniform"}, "bias 1": {"allocation": "biased", "bias": 1.0}}


def workload(allocation: str, rounds: int) -> RunConfig:
    return RunConfig(**ALLOCATIONS[allocation], rounds=rounds, batch_size=32, lr=0.05, local_epochs=1, device="cpu")


def _time_variant(variant: str, allocation: str, rounds: int, threads: int) -> tuple[list[float], float]:
    split = variant in ("workers", "per-worker")  # one process per core, one thread each; else cores as threads
    config = workload(allocation, rounds).replace(threads=1 if split else threads, processes=threads if split else 1)
    configure_torch(config.threads)
    data = load("mnist")
    if variant == "reference":
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            run_reference(config.replace(rounds=1), data)
            seconds.append(time.perf_counter() - start)
    else:
        result = run_federated(config, progress=False, data=data, lockstep=variant != "per-worker")
        seconds = [r["seconds"] for r in result.rounds[1:]]
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_variant(variant: str, allocation: str, rounds: int, threads: int) -> tuple[float, float]:
    """Median seconds per round after the first, and the process's peak memory in MiB."""
    # not multiprocessing.Pool: its processes are daemonic and may not start the ``workers`` processes
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds, peak_mib = pool.submit(_time_variant, variant, allocation, rounds, threads).result()
    return statistics.median(seconds[1:]), peak_mib


def parallel_runs(rounds: int) -> float:
    """Seconds per round per run when two independent runs (uniform, bias 1) share the cores, one thread each."""
    jobs = [(workload(a, rounds).replace(threads=1), "federated") for a in ALLOCATIONS]
    with tempfile.TemporaryDirectory() as tmp:
        results = run_many(jobs, RunStore(tmp), processes=2, progress=False)
    per_round = statistics.median(s for r in results for s in r.column("seconds")[2:])
    return per_round / len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per variant (the first is not counted)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    peak = matmul_peak(cores)
    print(f"matmul peak: {peak:.1f} GFLOP/s with {cores} threads, {matmul_peak(1):.1f} GFLOP/s with 1 thread")
    print(f"{'variant':<10} {'allocation':<10} {'s/round':>8} {'GFLOP/s':>8} {'of peak':>8} {'peak MiB':>9}")
    for variant in ("workers", "per-worker", "threads", "reference"):
        for name in ALLOCATIONS:
            seconds, mib = time_variant(variant, name, args.rounds, cores)
            rate = GFLOP_PER_ROUND / seconds
            print(f"{variant:<10} {name:<10} {seconds:>8.3f} {rate:>8.1f} {rate / peak:>8.0%} {mib:>9.0f}")
    seconds = parallel_runs(args.rounds)
    rate = GFLOP_PER_ROUND / seconds
    print(f"{'2 at once':<10} {'both':<10} {seconds:>8.3f} {rate:>8.1f} {rate / peak:>8.0%} {'':>9}"
          "  (two independent runs, one thread each: seconds per round of either, halved)")


if __name__ == "__main__":
    main()
