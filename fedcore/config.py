"""Run configuration: every parameter of an experiment, validated before any work starts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedcore.allocation import partitioner_for
from fedcore.errors import ConfigError
from fedcore.version import backend, engine_fingerprint

__all__ = ["ConfigError", "RunConfig", "validate", "with_local_work"]

DATASETS = ("mnist", "fashion-mnist")
MODELS = ("mlp", "cnn", "logistic")
ALLOCATIONS = ("uniform", "biased", "dirichlet", "classes", "shards")
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "scaffold", "fedrs", "fedlc", "fedntd", "fedaws", "fedbabu",
              "fedrs-centered")
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
    "fedrs-centered": ("rs_alpha",),
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
        """Each value in its field's canonical type (``canonical``), then validated."""
        for name in FIELD_TYPES:
            object.__setattr__(self, name, canonical(name, getattr(self, name)))
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


def _field_type(hint: object) -> tuple[type, bool]:
    """A field's type (int, float or str) and whether it may be None, from its annotation."""
    args = typing.get_args(hint) or (hint,)
    return next(t for t in args if t is not type(None)), type(None) in args


FIELD_TYPES = {name: _field_type(hint) for name, hint in typing.get_type_hints(RunConfig).items()}
CHOICES = {"dataset": DATASETS, "model": MODELS, "allocation": ALLOCATIONS, "strategy": STRATEGIES, "device": DEVICES}
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the engine computes in float32: larger finite values overflow
FLOAT32_RANGE = f"within float32's range, at most {FLOAT32_MAX:.4g} in absolute value"
MAX_THREADS = 1024  # torch threads: more than any machine's cores; a count beyond C's int overflowed in torch
# Each numeric field's allowed range, as errors say it, and its test of a value of the field's type (None, where
# allowed, is not tested). bias, alpha, classes_per_worker and shards_per_worker are the allocation's to check.
RANGES: dict[str, tuple[str, Callable[[typing.Any], bool]]] = {
    "workers": ("an integer >= 2", lambda v: v >= 2),
    "rounds": ("an integer >= 1", lambda v: v >= 1),
    "participation": ("in (0, 1]", lambda v: 0.0 < v <= 1.0),
    "local_epochs": ("an integer >= 1", lambda v: v >= 1),
    "local_steps": ("an integer >= 1", lambda v: v >= 1),
    "batch_size": ("an integer >= 1 or None (full batch)", lambda v: v >= 1),
    "lr": ("> 0 and finite", lambda v: 0 < v < math.inf),
    "lr_decay": ("in (0, 1]", lambda v: 0.0 < v <= 1.0),
    "momentum": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "weight_decay": (">= 0 and finite", lambda v: 0 <= v < math.inf),
    "server_lr": ("> 0 and finite", lambda v: 0 < v < math.inf),
    "server_momentum": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "mu": (">= 0 and finite", lambda v: 0 <= v < math.inf),
    "beta1": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "beta2": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "tau": ("> 0 and finite", lambda v: 0 < v < math.inf),
    "rs_alpha": ("in (0, 1]", lambda v: 0.0 < v <= 1.0),
    "lc_tau": (">= 0 and finite", lambda v: 0 <= v < math.inf),
    "ntd_beta": (">= 0 and finite", lambda v: 0 <= v < math.inf),
    "ntd_temperature": ("> 0 and finite", lambda v: 0 < v < math.inf),
    "aws_margin": ("in (0, 1] (a cosine distance (1 - cos) / 2)", lambda v: 0.0 < v <= 1.0),
    "aws_steps": ("an integer in [0, 10000]", lambda v: 0 <= v <= 10_000),
    "aws_lr": ("> 0 and finite", lambda v: 0 < v < math.inf),
    "shared_fraction": ("in [0, 1)", lambda v: 0.0 <= v < 1.0),
    "validation": (f"an integer in [0, {MAX_VALIDATION}] (training images held out for validation; 0 = none)",
                   lambda v: 0 <= v <= MAX_VALIDATION),
    "eval_workers": ("an integer in [0, 10000] (test images per worker evaluation; 0 = off)",
                     lambda v: 0 <= v <= 10_000),
    "seed": ("an integer >= 0 and < 2**64", lambda v: 0 <= v < 2**64),  # torch's generators take 64 bits
    "threads": (f"an integer in [1, {MAX_THREADS}]", lambda v: 1 <= v <= MAX_THREADS),
    "processes": ("an integer >= 1 or None (one per core)", lambda v: v >= 1),
}


def _allowed(name: str) -> str:
    """How an error says a field's allowed values, its type included."""
    kind, optional = FIELD_TYPES[name]
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    if kind is str:
        return "a path or None" if optional else "a string"
    number = {int: "an integer", float: "a number"}[kind]
    if name not in RANGES:
        return number + (" or None" if optional else "")
    allowed = RANGES[name][0]
    return allowed if allowed.startswith(number) else f"{number} {allowed}"


def canonical(name: str, value: object) -> object:
    """``value`` as field ``name``'s type, so that one experiment has one key however it was written: a float for
    a float field (an int or numpy float too), an int for an int field (a numpy int, or a float with no fraction),
    a str for a str field (a path too); None only where the field allows it. ConfigError naming the field for
    anything else: a bool, a string where a number is meant, a number that is not one of the type."""
    kind, optional = FIELD_TYPES[name]
    if value is None and optional:
        return None
    if kind is str:
        if isinstance(value, str | os.PathLike):
            return os.fspath(value) if name not in CHOICES else str(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        if isinstance(value, numbers.Integral):
            return int(value) if kind is int else _float(name, value)
        if kind is float:
            return float(value)
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
    raise ConfigError(f"{name} must be {_allowed(name)}; got {value!r}", param=name)


def _float(name: str, value: numbers.Integral) -> float:
    """An int as a float; one beyond a float's range is refused naming the field."""
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{name} must be {FLOAT32_RANGE}; got {value!r}", param=name) from None


def _check(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed}; got {value!r}")


def validate(c: RunConfig) -> None:
    """Raise ConfigError naming the first parameter outside its allowed range (no float may be inf or nan, or
    beyond float32's range). The values are of their fields' types (``canonical``)."""
    for name, options in CHOICES.items():
        _check(getattr(c, name) in options, name, _allowed(name), getattr(c, name))
    _check(not (c.strategy == "fedbabu" and c.model == "logistic"), "strategy/model",
           "another pair than fedbabu with logistic (FedBABU keeps the output layer fixed, and the logistic model is "
           "only an output layer: nothing would train)", (c.strategy, c.model))
    _check(
        (c.local_epochs is None) != (c.local_steps is None),
        "local_epochs/local_steps", "exactly one of the two set",
        (c.local_epochs, c.local_steps),
    )
    for name, (allowed, ok) in RANGES.items():
        value = getattr(c, name)
        if value is not None:
            _check(ok(value), name, allowed, value)
    for name, (kind, _) in FIELD_TYPES.items():
        value = getattr(c, name)
        if kind is float:
            _check(not math.isfinite(value) or abs(value) <= FLOAT32_MAX, name, FLOAT32_RANGE, value)
    partitioner_for(c).check(c.workers, NUM_CLASSES)  # the allocation's own parameter
