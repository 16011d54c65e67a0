"""The book's job graph on a Dask cluster started as Dask's command line starts one: a ``dask scheduler`` and two
``dask worker`` processes on this machine.

It trains the runs the committed plan (book/plan.json) gives the chosen pages into an empty run store, all
submitted at once (fedcore.plan.train with $FEDCORE_SCHEDULER set, as ``make book`` does), prints the most tasks
the scheduler held at one time, and then compares every run's per-round history, bit for bit, with the same run
in the book's store (``--against``, the store a ``make book`` filled), so that the cluster is seen to give the
same numbers. Run it with the book's kernel settings (the Makefile's KERNELS) for the bits to be comparable:

    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        python benchmarks/cluster_plan.py --pages exactness divergence comparison-mlp-short --against runs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from distributed import Client

from fedcore import executors, plan
from fedcore.store import RunStore

ROOT = Path(__file__).resolve().parent.parent


def most_tasks(address: str, stop: threading.Event, seen: list[int]) -> None:
    """Poll the scheduler every 0.2 s until ``stop``; the most tasks it held go into ``seen``."""
    with Client(address, set_as_default=False) as client:
        while not stop.is_set():
            seen.append(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", nargs="+", default=["exactness", "divergence", "comparison-mlp-short"],
                        help="pages of book/plan.json whose runs to train (default: three small ones; 'all': all)")
    parser.add_argument("--workers", type=int, default=2, help="dask worker processes, one thread each")
    parser.add_argument("--against", type=Path, default=ROOT / "runs", help="the book's run store to compare with")
    args = parser.parse_args()
    planned = plan.read(ROOT / "book" / "plan.json")
    pages = list(planned) if args.pages == ["all"] else args.pages
    unknown = sorted(set(pages) - set(planned))
    if unknown:
        parser.error(f"--pages must name pages of book/plan.json ({', '.join(sorted(planned))}); got {unknown}")
    jobs = plan.unique(planned, pages)
    with tempfile.TemporaryDirectory() as tmp, executors.command_line_cluster(Path(tmp), args.workers) as cluster:
        address = cluster[0]
        os.environ[executors.SCHEDULER_ENV] = address
        store, seen, stop = RunStore(Path(tmp) / "runs"), [0], threading.Event()
        watcher = threading.Thread(target=most_tasks, args=(address, stop, seen), daemon=True)
        watcher.start()
        start = time.perf_counter()
        trained = plan.train(jobs, store)
        seconds = time.perf_counter() - start
        stop.set()
        watcher.join()
        book = RunStore(args.against)
        same = differ = absent = 0
        for (config, kind), _ in jobs.values():
            ours, theirs = store.get(config, kind), book.get(config, kind)
            if theirs is None:
                absent += 1
            elif ours is not None and [r | {"seconds": 0} for r in ours.rounds] == \
                    [r | {"seconds": 0} for r in theirs.rounds]:
                same += 1
            else:
                differ += 1
    print(f"{len(jobs)} planned runs of {len(pages)} pages on {args.workers} dask workers: {len(trained)} trained "
          f"in {seconds:.0f} s; the scheduler held at most {max(seen)} tasks at once")
    print(f"against {args.against}: {same} runs equal bit for bit (every round's row but its seconds), "
          f"{differ} differ, {absent} not there")
    if differ:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
