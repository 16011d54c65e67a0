"""Command line: ``python -m fedcore run [options]`` trains (or fetches) one run and prints a summary;
``python -m fedcore sweep`` a grid of runs (fedcore.sweep)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from fedcore import sweep
from fedcore.config import ALLOCATIONS, DATASETS, DEVICES, MODELS, STRATEGIES, ConfigError, RunConfig
from fedcore.engine import TrainingDiverged
from fedcore.runner import run
from fedcore.store import RunStore, write_atomic

HELP = {
    "dataset": f"dataset: {', '.join(DATASETS)}",
    "model": f"model: {', '.join(MODELS)} (mlp is McMahan's 2NN)",
    "workers": "number of workers, integer >= 2",
    "allocation": f"how the digits are split: {', '.join(ALLOCATIONS)}",
    "bias": "biased allocation: share of each digit given to its home worker, in [0, 1]",
    "alpha": "dirichlet allocation: concentration, > 0 (small = skewed)",
    "classes_per_worker": "classes allocation: distinct classes per worker, in [1, 10]",
    "shards_per_worker": "shards allocation: label-sorted shards per worker, integer >= 1",
    "rounds": "communication rounds, integer >= 1",
    "participation": "fraction of workers taking part each round, in (0, 1]",
    "local_epochs": "local epochs per round, integer >= 1 (exclusive with --local-steps)",
    "local_steps": "local SGD steps per round, integer >= 1 (replaces --local-epochs)",
    "batch_size": "local batch size, integer >= 1, or 'full' for full-batch",
    "lr": "learning rate, > 0",
    "lr_decay": "learning rate multiplied by this each round, in (0, 1]",
    "momentum": "local SGD momentum, in [0, 1)",
    "weight_decay": "local weight decay, >= 0",
    "strategy": f"aggregation strategy: {', '.join(STRATEGIES)}",
    "server_lr": "fedavgm, fedadam, scaffold: server learning rate, > 0",
    "server_momentum": "fedavgm: server momentum, in [0, 1)",
    "mu": "fedprox: weight of the proximal term mu/2 ||w - w_global||^2, >= 0",
    "beta1": "fedadam: decay of the server's first moment, in [0, 1)",
    "beta2": "fedadam: decay of the server's second moment, in [0, 1)",
    "tau": "fedadam: adaptivity, added to the root of the second moment, > 0",
    "shared_fraction": "share of the training data held out and given to every worker, in [0, 1)",
    "eval_workers": "test images on which each worker's local model is scored each round, 0..10000 (0 = off)",
    "seed": "random seed, integer >= 0",
    "device": f"{', '.join(DEVICES)} (auto = CUDA when present)",
    "threads": "torch threads, integer >= 1 (default: every core)",
    "processes": "worker processes training one run's workers on CPU, one thread each, integer >= 1 "
                 "(default: one per core)",
    "data_dir": "data directory (default: $FEDCORE_DATA_DIR, else data/)",
}


def _batch_size(text: str) -> int | None:
    return None if text == "full" else int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fedcore", description="Federated averaging on badly split MNIST.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one run (or fetch it from the run store) and print a summary",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--kind", choices=["federated", "centralized"], default="federated",
                   help="federated or the centralized baseline")
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        default = getattr(defaults, f.name)
        kind = {"batch_size": _batch_size}.get(f.name, type(default) if default is not None else int)
        if f.name in ("data_dir", "device") or isinstance(default, str):
            kind = str
        r.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default, help=HELP[f.name])
    r.add_argument("--runs-dir", default=None, help="run store folder (default: $FEDCORE_RUNS_DIR, else runs/)")
    r.add_argument("--out", type=Path, default=None, help="also write the result as JSON to this file")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "sweep":
        return sweep.main(args, p)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)}
    if args.local_steps is not None:
        values["local_epochs"] = None
    try:
        config = RunConfig(**values)
    except ConfigError as err:
        option = "--" + err.param.replace("_", "-").replace("/", "/--")
        p.error(f"{option}: {err}")
    store = RunStore(args.runs_dir)
    try:
        result = run(config, args.kind, store, progress=not args.no_progress)
    except TrainingDiverged as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    if args.out:
        write_atomic(args.out, json.dumps(result.to_dict()))
    last = result.rounds[-1]
    print(f"{args.kind} run {result.key}: round {last['round']}, test accuracy {last['test_accuracy']:.4f}, "
          f"test loss {last['test_loss']:.4f}; stored at {store.path(result.key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
