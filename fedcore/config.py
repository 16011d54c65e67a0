"""Run configuration: every parameter of an experiment, validated before any work starts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from fedcore.allocation import partitioner_for
from fedcore.errors import ConfigError
from fedcore.version import backend, engine_fingerprint

__all__ = ["ConfigError", "RunConfig", "validate", "with_local_work"]

DATASETS = ("mnist", "fashion-mnist")
MODELS = ("mlp", "cnn", "logistic")
ALLOCATIONS = ("uniform", "biased", "dirichlet", "classes", "shards")
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "scaffold", "fedrs", "fedlc", "fedntd", "fedaws", "fedbabu")
DEVICES = ("auto", "cpu", "cuda")
NUM_CLASSES = 10  # both datasets have ten classes
MAX_VALIDATION = 30_000  # at most half of the 60,000 training images held out for validation

# Parameters that only matter for one allocation or strategy; left out of the run key otherwise.
ALLOCATION_PARAMS = {
    "uniform": (),
    "biased": ("bias",),
    "dirichlet": ("alpha",),
    "classes": ("classes_per_worker",),
    "shards": ("shards_per_worker",),
}
STRATEGY_PARAMS: dict[str, tuple[str, ...]] = {
    "fedavg": (),
    "fedavgm": ("server_lr", "server_momentum"),
    "fedprox": ("mu",),
    "fedadam": ("server_lr", "beta1", "beta2", "tau"),
    "scaffold": ("server_lr",),
    "fedrs": ("rs_alpha",),
    "fedlc": ("lc_tau",),
    "fedntd": ("ntd_beta", "ntd_temperature"),
    "fedaws": ("aws_margin", "aws_steps", "aws_lr"),
    "fedbabu": (),
}
# How to run, not what to run: not in the key as such. The device and thread count enter it through
# version.backend (the CUDA device's name, else the thread count), since they change the last bits;
# worker processes (one thread each) give the same bits as the sequential path.
EXECUTION_FIELDS = ("device", "threads", "processes", "data_dir")
# Recorded, not trained (worker scoring): not in the key; a stored run with more satisfies a request for less.
DETAIL_FIELDS = ("eval_workers",)
# The centralized baseline pools all data: how it was allocated and aggregated does not matter.
FEDERATED_ONLY = ("allocation", "strategy", "eval_workers", "shared_fraction")


def with_local_work(given: dict[str, object]) -> dict[str, object]:
    """Settings in which naming local_steps unsets the default local_epochs and vice versa (the two are
    exclusive); naming both is a ConfigError."""
    if "local_epochs" in given and "local_steps" in given:
        raise ConfigError("local_epochs/local_steps are exclusive: give one of the two; got "
                          f"{given['local_epochs']} and {given['local_steps']}", param="local_epochs/local_steps")
    other = {"local_steps": "local_epochs", "local_epochs": "local_steps"}
    return {**given, **{other[k]: None for k in other if k in given}}


@dataclass(frozen=True)
class RunConfig:
    """One federated (or centralized) training run."""

    dataset: str = "mnist"
    model: str = "mlp"
    workers: int = 10
    allocation: str = "biased"
    bias: float = 0.0
    alpha: float = 0.5
    classes_per_worker: int = 2
    shards_per_worker: int = 2
    rounds: int = 50
    participation: float = 1.0
    local_epochs: int | None = 1
    local_steps: int | None = None
    batch_size: int | None = 32
    lr: float = 0.05
    lr_decay: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    strategy: str = "fedavg"
    server_lr: float = 1.0  # fedavgm, fedadam, scaffold
    server_momentum: float = 0.9  # fedavgm
    mu: float = 0.01  # fedprox
    beta1: float = 0.9  # fedadam
    beta2: float = 0.99  # fedadam
    tau: float = 1e-3  # fedadam
    rs_alpha: float = 0.5  # fedrs
    lc_tau: float = 1.0  # fedlc
    ntd_beta: float = 1.0  # fedntd
    ntd_temperature: float = 1.0  # fedntd
    aws_margin: float = 0.8  # fedaws
    aws_steps: int = 30  # fedaws
    aws_lr: float = 0.1  # fedaws
    shared_fraction: float = 0.0
    validation: int = 0  # training images held out (the same ones in every run) to choose settings on
    eval_workers: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    processes: int | None = None  # worker processes for one run's local training on CPU (fedcore.parallel)
    data_dir: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def per_round(self) -> int:
        """Workers chosen to take part in each round (at least one)."""
        return max(1, round(self.participation * self.workers))

    def replace(self, **changes: object) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def experiment(self, kind: str = "federated") -> dict[str, object]:
        """The fields that decide a run's result: no execution settings, no knobs the run ignores."""
        unused = {p for a, ps in ALLOCATION_PARAMS.items() if a != self.allocation for p in ps}
        unused |= {p for s, ps in STRATEGY_PARAMS.items() if s != self.strategy for p in ps}
        unused -= set(ALLOCATION_PARAMS[self.allocation]) | set(STRATEGY_PARAMS[self.strategy])
        if kind == "centralized":
            unused |= set(FEDERATED_ONLY) | {p for ps in ALLOCATION_PARAMS.values() for p in ps}
            unused |= {p for ps in STRATEGY_PARAMS.values() for p in ps}
        if not self.validation:  # no held-out images: the key of a run from before the field existed
            unused.add("validation")
        return {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in unused and k not in EXECUTION_FIELDS
        }

    def key(self, kind: str = "federated") -> str:
        """Stable hash of what decides the result: the experiment (less DETAIL_FIELDS), the kind of run,
        the engine's fingerprint (its source, torch, ENGINE_VERSION) and the backend (GPU or thread count)."""
        experiment = {k: v for k, v in self.experiment(kind).items() if k not in DETAIL_FIELDS}
        payload = {"kind": kind, "engine": engine_fingerprint(), "backend": backend(self.device, self.threads),
                   **experiment}
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed}; got {value!r}")


def _choice(name: str, value: object, options: tuple[str, ...]) -> None:
    _check(value in options, name, "one of " + ", ".join(options), value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(c: RunConfig) -> None:
    """Raise ConfigError naming the first parameter outside its allowed range (no float may be inf or nan)."""
    _choice("dataset", c.dataset, DATASETS)
    _choice("model", c.model, MODELS)
    _choice("allocation", c.allocation, ALLOCATIONS)
    _choice("strategy", c.strategy, STRATEGIES)
    _choice("device", c.device, DEVICES)
    _check(_int(c.workers) and c.workers >= 2, "workers", "an integer >= 2", c.workers)
    _check(_int(c.rounds) and c.rounds >= 1, "rounds", "an integer >= 1", c.rounds)
    _check(0.0 < c.participation <= 1.0, "participation", "in (0, 1]", c.participation)
    _check(
        (c.local_epochs is None) != (c.local_steps is None),
        "local_epochs/local_steps", "exactly one of the two set",
        (c.local_epochs, c.local_steps),
    )
    if c.local_epochs is not None:
        _check(_int(c.local_epochs) and c.local_epochs >= 1, "local_epochs", "an integer >= 1", c.local_epochs)
    if c.local_steps is not None:
        _check(_int(c.local_steps) and c.local_steps >= 1, "local_steps", "an integer >= 1", c.local_steps)
    _check(
        c.batch_size is None or (_int(c.batch_size) and c.batch_size >= 1),
        "batch_size", "an integer >= 1 or None (full batch)", c.batch_size,
    )
    _check(0 < c.lr < math.inf, "lr", "> 0 and finite", c.lr)
    _check(0.0 < c.lr_decay <= 1.0, "lr_decay", "in (0, 1]", c.lr_decay)
    _check(0.0 <= c.momentum < 1.0, "momentum", "in [0, 1)", c.momentum)
    _check(0 <= c.weight_decay < math.inf, "weight_decay", ">= 0 and finite", c.weight_decay)
    _check(0 < c.server_lr < math.inf, "server_lr", "> 0 and finite", c.server_lr)
    _check(0.0 <= c.server_momentum < 1.0, "server_momentum", "in [0, 1)", c.server_momentum)
    _check(0 <= c.mu < math.inf, "mu", ">= 0 and finite", c.mu)
    _check(0.0 <= c.beta1 < 1.0, "beta1", "in [0, 1)", c.beta1)
    _check(0.0 <= c.beta2 < 1.0, "beta2", "in [0, 1)", c.beta2)
    _check(0 < c.tau < math.inf, "tau", "> 0 and finite", c.tau)
    _check(0.0 < c.rs_alpha <= 1.0, "rs_alpha", "in (0, 1]", c.rs_alpha)
    _check(0 <= c.lc_tau < math.inf, "lc_tau", ">= 0 and finite", c.lc_tau)
    _check(0 <= c.ntd_beta < math.inf, "ntd_beta", ">= 0 and finite", c.ntd_beta)
    _check(0 < c.ntd_temperature < math.inf, "ntd_temperature", "> 0 and finite", c.ntd_temperature)
    _check(0.0 < c.aws_margin <= 1.0, "aws_margin", "in (0, 1] (a cosine distance (1 - cos) / 2)", c.aws_margin)
    _check(_int(c.aws_steps) and 0 <= c.aws_steps <= 10_000, "aws_steps", "an integer in [0, 10000]", c.aws_steps)
    _check(0 < c.aws_lr < math.inf, "aws_lr", "> 0 and finite", c.aws_lr)
    _check(0.0 <= c.shared_fraction < 1.0, "shared_fraction", "in [0, 1)", c.shared_fraction)
    _check(
        _int(c.validation) and 0 <= c.validation <= MAX_VALIDATION, "validation",
        f"an integer in [0, {MAX_VALIDATION}] (training images held out for validation; 0 = none)", c.validation,
    )
    _check(
        _int(c.eval_workers) and 0 <= c.eval_workers <= 10_000,
        "eval_workers", "an integer in [0, 10000] (test images per worker evaluation; 0 = off)",
        c.eval_workers,
    )
    _check(_int(c.seed) and c.seed >= 0, "seed", "an integer >= 0", c.seed)
    _check(_int(c.threads) and c.threads >= 1, "threads", "an integer >= 1", c.threads)
    _check(
        c.processes is None or (_int(c.processes) and c.processes >= 1),
        "processes", "an integer >= 1 or None (one per core)", c.processes,
    )
    partitioner_for(c).check(c.workers, NUM_CLASSES)  # the allocation's own parameter
