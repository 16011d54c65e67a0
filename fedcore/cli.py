"""Command line: ``python -m fedcore run [options]`` trains (or fetches) one run and prints a summary;
``python -m fedcore sweep`` trains a grid of runs (fedcore.sweep); ``python -m fedcore notebook IN OUT -p NAME
VALUE`` executes a notebook after checking its parameters.

A user error exits 2 with one line naming the option and its allowed range, before any work; Ctrl-C
exits 130 and SIGTERM 143, after stopping the worker processes; a run that diverged, a worker process that
died or a result that could not be written exits 1, in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import NoReturn

from fedcore import experiments, notebook, sweep
from fedcore.config import (
    ALLOCATIONS,
    DATASETS,
    DEVICES,
    MODELS,
    STRATEGIES,
    ConfigError,
    RunConfig,
    with_local_work,
)
from fedcore.engine import TrainingDiverged
from fedcore.processes import Terminated, WorkerDied, sigterm_as_interrupt
from fedcore.runner import check, run
from fedcore.store import RunStore, WriteError, check_writable, write_atomic

HELP = {
    "dataset": f"dataset: {', '.join(DATASETS)}",
    "model": f"model: {', '.join(MODELS)} (mlp is McMahan's 2NN)",
    "workers": "number of workers, integer >= 2",
    "allocation": f"how the digits are split: {', '.join(ALLOCATIONS)}",
    "bias": "biased allocation: share of each digit given to its home worker, in [0, 1]: 0 = each worker lacks "
            "its own digit (the others share it), 1/workers = uniform in expectation, 1 = one digit per worker",
    "alpha": "dirichlet allocation: concentration, > 0 and finite (small = skewed)",
    "classes_per_worker": "classes allocation: distinct classes per worker, in [1, 10]",
    "shards_per_worker": "shards allocation: label-sorted shards per worker, integer >= 1",
    "rounds": "communication rounds, integer >= 1",
    "participation": "fraction of workers taking part each round, in (0, 1]",
    "local_epochs": "local epochs per round, integer >= 1 (default: 1 unless --local-steps is given; "
                    "exclusive with --local-steps)",
    "local_steps": "local SGD steps per round, integer >= 1 (default: none, epochs are used; exclusive with "
                   "--local-epochs)",
    "batch_size": "local batch size, integer >= 1, or 'full' for full-batch",
    "lr": "learning rate, > 0 and finite",
    "lr_decay": "learning rate multiplied by this each round, in (0, 1]",
    "momentum": "local SGD momentum, in [0, 1)",
    "weight_decay": "local weight decay, >= 0 and finite",
    "strategy": f"aggregation strategy: {', '.join(STRATEGIES)} (fedbabu: the output layer stays fixed)",
    "server_lr": "fedavgm, fedadam, scaffold: server learning rate, > 0 and finite",
    "server_momentum": "fedavgm: server momentum, in [0, 1)",
    "mu": "fedprox: weight of the proximal term mu/2 ||w - w_global||^2, >= 0 and finite",
    "beta1": "fedadam: decay of the server's first moment, in [0, 1)",
    "beta2": "fedadam: decay of the server's second moment, in [0, 1)",
    "tau": "fedadam: adaptivity, added to the root of the second moment, > 0 and finite",
    "rs_alpha": "fedrs: scale of the logits of the classes a worker does not hold, in (0, 1] (1 = FedAvg)",
    "lc_tau": "fedlc: calibration strength, each logit shifted by -lc_tau * (class count)^(-1/4), >= 0 and finite "
              "(0 = FedAvg)",
    "ntd_beta": "fedntd: weight of the not-true distillation from the global model, >= 0 and finite (0 = FedAvg)",
    "ntd_temperature": "fedntd: temperature of the not-true distillation, > 0 and finite",
    "aws_margin": "fedaws: cosine distance (1 - cos) / 2 below which the manager pushes two class rows apart, "
                  "in (0, 1]",
    "aws_steps": "fedaws: the manager's spreadout steps after each average, integer in [0, 10000] (0 = FedAvg)",
    "aws_lr": "fedaws: learning rate of the manager's spreadout steps, > 0 and finite",
    "shared_fraction": "share of the training data held out and given to every worker, in [0, 1)",
    "validation": "training images held out for validation (the same ones in every run), in [0, 30000]; 0 = none",
    "eval_workers": "test images on which each worker's local model is scored each round, 0..10000 (0 = off); "
                    "not part of the run key: a stored run scored on more images serves a request for fewer",
    "seed": "random seed, integer >= 0 and < 2**64",
    "device": f"{', '.join(DEVICES)} (auto = CUDA when present)",
    "threads": "torch threads on CPU, integer in [1, 1024]; part of the run key, as the count changes the last bits",
    "processes": "worker processes training one run's workers on CPU, one thread each, integer >= 1 "
                 "(default: one per core)",
    "data_dir": "data directory (default: $FEDCORE_DATA_DIR, else data/)",
}


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``PROG: error: MESSAGE``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _batch_size(text: str) -> int | None:
    return None if text == "full" else int(text)


def _standard_help() -> str:
    defaults = RunConfig()
    changed = [f"{k}={v}" for k, v in experiments.STANDARD_SETTINGS.items() if v != getattr(defaults, k)]
    return ("start from the report's standard settings (fedcore.experiments.STANDARD: " + ", ".join(changed)
            + f", threads=${experiments.THREADS_ENV} or 1) instead of the defaults above, so that runs are shared "
              "with the book; other options override them")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m fedcore", description="Federated averaging on badly split MNIST.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one run (or fetch it from the run store) and print a summary",
                       description="Train one run, or fetch it from the run store, and print a summary.")
    r.set_defaults(command_parser=r)
    r.add_argument("--kind", choices=["federated", "centralized"], default="federated",
                   help="federated or the centralized baseline (default: federated)")
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):  # default SUPPRESS: only the options given appear in the namespace
        default = getattr(defaults, f.name)
        kind = {"batch_size": _batch_size}.get(f.name, type(default) if default is not None else int)
        if f.name in ("data_dir", "device") or isinstance(default, str):
            kind = str
        text = HELP[f.name] if "(default:" in HELP[f.name] else f"{HELP[f.name]} (default: {default})"
        r.add_argument("--" + f.name.replace("_", "-"), type=kind, default=argparse.SUPPRESS, help=text)
    r.add_argument("--standard", action="store_true", help=_standard_help())
    r.add_argument("--force", action="store_true", help="train again even when the run is stored, and replace it")
    r.add_argument("--runs-dir", default=None, help="run store folder (default: $FEDCORE_RUNS_DIR, else runs/)")
    r.add_argument("--out", type=Path, default=None, help="also write the result as JSON to this file")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    notebook.add_parser(sub)
    sweep.add_parser(sub)
    return p


def option_error(err: ConfigError) -> str:
    """The error's message with its parameter name(s) written as options: 'bias must ...' -> '--bias must ...'
    (an environment variable's, '$NAME must ...', is left as it is)."""
    if err.param.startswith("$"):
        return str(err)
    options = "/".join("--" + name.replace("_", "-") for name in err.param.split("/"))
    text = str(err)
    return options + text[len(err.param):] if text.startswith(err.param) else f"{options}: {text}"


def config_from(args: argparse.Namespace) -> RunConfig:
    """The run the options ask for: the defaults (or STANDARD with --standard) with the options given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig) if hasattr(args, f.name)}
    return (experiments.standard() if args.standard else RunConfig()).replace(**with_local_work(given))


def run_command(args: argparse.Namespace) -> int:
    """``run``: every check before the training, then the run, its summary and --out."""
    store = RunStore(args.runs_dir)
    try:
        config = config_from(args)
        if args.out is not None:
            check_writable(args.out, "out", folder=False)
        if args.force or store.get(config, args.kind) is None:  # it trains: check what training needs
            check(config, args.kind, store)
    except ConfigError as err:
        args.command_parser.error(option_error(err))
    try:
        result = run(config, args.kind, store, progress=not args.no_progress, force=args.force)
        if args.out:
            write_atomic(args.out, json.dumps(result.to_dict()))
    except TrainingDiverged as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 1
    except WriteError as err:
        print(f"{args.command_parser.prog}: {err} (the run trained; make room and run again)", file=sys.stderr)
        return 1
    last = result.rounds[-1]
    print(f"{args.kind} run {result.key}: round {last['round']}, test accuracy {last['test_accuracy']:.4f}, "
          f"test loss {last['test_loss']:.4f}; stored at {store.path(result.key)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command's exit status: 0, 1 (failed or diverged runs, a dead worker process, a result not written),
    2 (a user error; argparse exits with it), 130 (Ctrl-C) or 143 (SIGTERM)."""
    args = parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():
            if args.command == "notebook":
                return notebook.main(args)
            if args.command == "sweep":
                return sweep.main(args)
            return run_command(args)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except WorkerDied as err:
        print(f"{args.command_parser.prog}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
