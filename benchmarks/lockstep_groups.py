"""Lock-step groups: one round of the ten workers' local training in lock-step stacks of k workers (the engine's
``fedcore.local.GROUPS[model]``), one stack after another, for k = 10 (one stack of all), 5, 2 and 1, on one
thread, as a pool process trains a book run.

For each k, the median seconds of ``--rounds`` rounds after a warm-up, per worker-step, and as a share of the best
k in the same pass; two passes, so that one slow pass shows. It also checks that every group size gives the
updates of all ten bit for bit (a group size that changed them would change every run's key and numbers).
Workloads: the 2NN's standard work (50 steps of 32 per round at bias 1) and heavy work (one local epoch, momentum
0.9), and softmax regression's standard work. Run it on a quiet machine.

    python benchmarks/lockstep_groups.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedcore import data as datasets
from fedcore import experiments, local
from fedcore.engine import _setup, allocate

GROUPS = (10, 5, 2, 1)


def round_seconds(config, data, model, shards, k: int, rounds: int) -> tuple[float, list[torch.Tensor]]:
    """Median seconds of ``rounds`` rounds (after one warm-up) training the ten workers in stacks of ``k``
    (``fedcore.local.GROUPS[config.model]``); the updated parameters of the last round, in worker order."""
    test = (data.test_x[:0], data.test_y[:0])
    tasks = [(w, None) for w in range(config.workers)]
    times, params = [], []
    local.GROUPS[config.model] = k
    for rnd in range(1, rounds + 2):
        start = time.perf_counter()
        trained = local.train_workers(model, (data.train_x, data.train_y), shards, test, config, rnd, config.lr,
                                      model.params, tasks)
        times.append(time.perf_counter() - start)
        params = [t.update.params for t in trained]
    return statistics.median(times[1:]), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per group size, after one warm-up")
    args = parser.parse_args()
    local.configure_torch(1)
    standard = experiments.standard().replace(bias=1.0, eval_workers=0)
    workloads = {"standard work": standard,
                 "heavy work": standard.replace(local_steps=None, local_epochs=1, momentum=0.9),
                 "softmax regression, standard work": standard.replace(model="logistic")}
    mnist = datasets.load("mnist")
    for name, config in workloads.items():
        data, _, model = _setup(config, mnist)
        shards = allocate(config, data.train_y)[1]
        steps = sum(-(-len(s) // config.batch_size) if config.local_steps is None else config.local_steps
                    for s in shards)
        for run in (1, 2):
            seconds, updates = {}, {}
            for k in GROUPS:
                seconds[k], updates[k] = round_seconds(config, data, model, shards, k, args.rounds)
            best = min(seconds.values())
            print(f"{name}, pass {run}: {steps} worker-steps per round")
            for k in GROUPS:
                same = all(torch.equal(a, b) for a, b in zip(updates[k], updates[10], strict=True))
                print(f"  groups of {k:>2}: {seconds[k]:6.2f} s per round, {1e6 * seconds[k] / steps:6.0f} us per "
                      f"worker-step, {100 * best / seconds[k]:3.0f}% of the best; updates as all ten's: {same}")


if __name__ == "__main__":
    main()
