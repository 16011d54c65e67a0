"""fedcore against Flower's simulation engine, side by side on the same workload.

Workload: MNIST, 10 workers, McMahan's 2NN, batch 32, lr 0.05, plain SGD, one local epoch per round, FedAvg
weighted by samples, 5 rounds, uniform and bias 1. Both get fedcore's split (``allocate``, seed 0), its
initial model and its batch order; Flower's clients (benchmarks/flower_app.py) train with an ordinary torch
loop in Ray actors of one CPU each, one actor per core, and the server evaluates on the test set after each
round; fedcore trains with ``run_federated`` as it stands: one worker process per core. Everything runs
with one torch thread per process or actor.

Each framework runs each allocation in a fresh process, so start-up is counted and memory is its own:
- s/round: median of rounds 2-5, each round up to the end of its test-set evaluation;
- first round: from the start of the run (data in memory, imports done) to the end of round 1, Ray and
  its actors or fedcore's worker processes started on the way;
- peak MiB: the highest sum of RSS over the process and all its descendants (Ray's processes included),
  sampled every 0.1 s; pages shared between processes are counted in each;
- accuracy: final test accuracy. fedcore also runs seeds 1 to 4 (unmeasured) to gauge seed noise; the two
  agree when Flower's lies in the 95% prediction interval of one more fedcore seed: mean +- t(0.975, n-1)
  * sd * sqrt(1 + 1/n) over the n fedcore seeds. As Flower shares seed 0's split, initial model and
  batches, a large gap from fedcore's seed 0 would point to another algorithm, not another draw.
The last column is Flower's s/round over fedcore's. On a machine shared with other work the timings mean
little: run it twice on a quiet machine.

    make benchmark-flower        # .venv-flower with .[flower], then this script
    python benchmarks/vs_flower.py [--rounds 5] [--seeds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from round_speed import ALLOCATIONS, workload

from fedcore.config import RunConfig
from fedcore.data import DataDamagedError, DataNotFoundError, load
from fedcore.stats import t975

if TYPE_CHECKING:
    import psutil

CORES = os.cpu_count() or 1
Timing = tuple[list[float], float]  # seconds of each round (the first from the start), final test accuracy


def fedcore_run(config: RunConfig) -> Timing:
    """``run_federated`` with its default worker processes."""
    from fedcore.engine import configure_torch, run_federated

    configure_torch(config.threads)
    data = load(config.dataset, config.data_dir)
    start = time.perf_counter()
    result = run_federated(config, progress=False, data=data)
    later = result.column("seconds")[2:]
    # the first round: the whole run less the later rounds (and a final confusion matrix, a few ms)
    return [time.perf_counter() - start - sum(later), *later], result.final_accuracy


def flower_run(config: RunConfig) -> Timing:
    """Flower's simulation, one Ray actor of one CPU per core."""
    # no telemetry, no log lines between the table's (run_simulation's deprecation notice among them); the last
    # silences a FutureWarning of Ray's about GPUs, which are not used
    os.environ.update(FLWR_TELEMETRY_ENABLED="0", FLWR_LOG_LEVEL="ERROR", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    from flower_app import simulate  # a module of its own: Ray's actors import it (see its docstring)

    return simulate(config, actors=CORES)


def fedcore_accuracies(configs: list[RunConfig]) -> list[float]:
    return [fedcore_run(c)[1] for c in configs]


def _child(conn: Connection, fn: Callable, args: tuple) -> None:
    conn.send(fn(*args))


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in ``root`` and all its descendants (those that end meanwhile are skipped)."""
    import psutil  # here: only .venv-flower has it, and main() says so in one line

    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measured(fn: Callable, *args: object) -> tuple[object, float]:
    """``fn(*args)`` in a fresh spawned process: its result and the peak RSS of its process tree in MiB."""
    import psutil

    context = multiprocessing.get_context("spawn")  # not daemonic: fedcore starts its worker processes
    receive, send = context.Pipe(duplex=False)
    proc = context.Process(target=_child, args=(send, fn, args))
    proc.start()
    send.close()
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(root))
            except psutil.NoSuchProcess:
                return
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = receive.recv()
    except EOFError as err:
        raise RuntimeError(f"{fn.__name__} failed (its traceback is above)") from err
    finally:
        proc.join()
        done.set()
        sampler.join()
    return result, peak / 2**20


def row(allocation: str, framework: str, seconds: list[float], mib: float, accuracy: float,
        ratio: float | None = None) -> None:
    """One line of the table: s/round (median after the first), first round, peak MiB, accuracy, ratio."""
    ratio_text = f"{ratio:.2f}x" if ratio else ""
    print(f"{allocation:<10} {framework:<8} {statistics.median(seconds[1:]):>8.3f} {seconds[0]:>8.2f} {mib:>9.0f} "
          f"{accuracy:>9.4f} {ratio_text:>15}")


def agreement(fedcore: list[float]) -> tuple[float, float]:
    """The 95% prediction interval of one more fedcore seed's accuracy (see the module's docstring)."""
    n = len(fedcore)
    half = t975(n - 1) * statistics.stdev(fedcore) * (1 + 1 / n) ** 0.5
    mean = statistics.fmean(fedcore)
    return mean - half, mean + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run (>= 2; the first is timed apart)")
    parser.add_argument("--seeds", type=int, default=5, help="fedcore seeds for the accuracy check (>= 2)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.exit(2, f"vs_flower.py: --rounds must be an integer >= 2; got {args.rounds}\n")
    if args.seeds < 2:
        parser.exit(2, f"vs_flower.py: --seeds must be an integer >= 2; got {args.seeds}\n")
    missing = [m for m in ("flwr", "ray", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        parser.exit(2, f"vs_flower.py: {', '.join(missing)} not installed: run make benchmark-flower, "
                       "or pip install -e '.[flower]' in a venv of its own\n")
    try:
        load("mnist")
    except (DataNotFoundError, DataDamagedError) as err:
        parser.exit(2, f"vs_flower.py: {err}\n")
    flwr, ray, torch = (version(p) for p in ("flwr", "ray", "torch"))
    print(f"{args.rounds} rounds; {CORES} cores: Flower {flwr} (Ray {ray}) with {CORES} actors of one CPU, "
          f"fedcore with {CORES} worker processes; torch {torch}, one thread each")
    print(f"{'allocation':<10} {'framework':<8} {'s/round':>8} {'first s':>8} {'peak MiB':>9} {'accuracy':>9}"
          f" {'Flower/fedcore':>15}")
    for name in ALLOCATIONS:
        config = workload(name, args.rounds).replace(seed=0, threads=1)
        (fed_seconds, fed_accuracy), fed_mib = measured(fedcore_run, config)
        row(name, "fedcore", fed_seconds, fed_mib, fed_accuracy)
        (seconds, accuracy), mib = measured(flower_run, config)
        ratio = statistics.median(seconds[1:]) / statistics.median(fed_seconds[1:])
        row(name, "Flower", seconds, mib, accuracy, ratio)
        others, _ = measured(fedcore_accuracies, [config.replace(seed=s) for s in range(1, args.seeds)])
        seeds = [fed_accuracy, *others]
        low, high = agreement(seeds)
        verdict = "agree" if low <= accuracy <= high else "DISAGREE"
        print(f"{'':<10} accuracy: Flower {accuracy:.4f}, fedcore seeds 0-{len(seeds) - 1} "
              f"{' '.join(f'{a:.4f}' for a in seeds)}; 95% prediction interval [{low:.4f}, {high:.4f}]: {verdict} "
              f"(Flower - fedcore seed 0: {accuracy - fed_accuracy:+.4f})")

if __name__ == "__main__":
    main()
