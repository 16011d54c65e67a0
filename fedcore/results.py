"""A finished run: its configuration, the software that ran it and its per-round history as tidy tables."""

from __future__ import annotations

import dataclasses
import math
import platform
import reprlib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from fedcore.version import ENGINE_VERSION, engine_fingerprint

Row = dict[str, object]


def package_versions() -> dict[str, str]:
    """Versions of Python, the engine (its salt and source fingerprint) and the numerical packages."""
    out = {"python": platform.python_version(), "fedcore_engine": ENGINE_VERSION,
           "engine_fingerprint": engine_fingerprint()}
    for name in ("torch", "torchvision", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class RunResult:
    """Everything recorded for one run. Each table is a list of rows (dicts), one observation per row:

    - ``rounds``: round, test_loss, test_accuracy, lr, samples (seen so far), seconds (that round),
      predicted (test images assigned to each class), output_bias (the output layer's biases);
    - ``classes``: round, digit, accuracy of the global model on that digit's test images;
    - ``workers``: per round and participating worker, its local model before averaging: num_samples,
      update_norm, output_share (of the update's norm in the output layer), cosine (with each
      participant's update, in the order of the rows), output_bias; with ``eval_workers`` also its
      test_accuracy, test_loss and predicted;
    - ``allocation``: the workers x classes count table;
    - ``confusion``: the final global model's confusion matrix (rows true, columns predicted).
    """

    kind: str
    key: str
    config: dict[str, object]
    versions: dict[str, str] = field(default_factory=package_versions)
    rounds: list[Row] = field(default_factory=list)
    classes: list[Row] = field(default_factory=list)
    workers: list[Row] = field(default_factory=list)
    allocation: list[list[int]] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    diverged: str | None = None  # why training stopped early (the loss became NaN or infinite), else None
    wall_seconds: float | None = None  # the whole run's seconds, setup and scoring included, where timed

    def column(self, name: str, table: str = "rounds") -> list:
        """One column of a table, e.g. ``result.column("test_accuracy")``."""
        return [row[name] for row in getattr(self, table)]

    @property
    def final_accuracy(self) -> float:
        return float(self.rounds[-1]["test_accuracy"])

    @property
    def chance(self) -> float:
        """Accuracy of guessing one class: 1 / the number of classes the model predicts."""
        return 1 / len(self.rounds[0]["predicted"])

    def to_dict(self) -> dict[str, object]:
        """Every table, as JSON takes it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: object) -> RunResult:
        """The run a dict (as ``to_dict`` writes it) describes; ValueError naming what is missing or malformed,
        down to the columns of each row of ``rounds`` that callers read (ROUND_COLUMNS)."""
        if not isinstance(d, dict):
            raise ValueError(f"a run is a JSON object; got {type(d).__name__}")
        unknown, missing = set(d) - set(_FIELD_TYPES), {"kind", "key", "config"} - set(d)
        if unknown or missing:
            raise ValueError(f"unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
        for name, kind in _FIELD_TYPES.items():
            if name in d and not isinstance(d[name], kind):
                raise ValueError(f"field {name!r} must be of type {kind}; got {type(d[name]).__name__}")
        columns = ROUND_COLUMNS.get(d["kind"], {"round": int})
        if d["config"].get("validation") and d["kind"] != "divergence":
            columns = {**columns, **VALIDATION_COLUMNS}
        for i, row in enumerate(d.get("rounds", [])):
            why = _malformed(row, columns)
            if why is not None:
                raise ValueError(f"row {i} of 'rounds' {why}")
        return cls(**d)


# Every field of RunResult and its JSON type (kind, key and config are required, the rest have defaults).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str, "key": str, "config": dict, "versions": dict, "rounds": list, "classes": list,
    "workers": list, "allocation": list, "confusion": list, "diverged": (str, type(None)),
    "wall_seconds": (float, int, type(None)),
}

# The columns of each kind's 'rounds' table that callers read, by JSON type (float: any finite number); with
# held-out images (config 'validation'), federated and centralized runs have VALIDATION_COLUMNS too.
_SCORED = {"round": int, "test_loss": float, "test_accuracy": float, "lr": float, "samples": int, "seconds": float,
           "predicted": list, "output_bias": list}
ROUND_COLUMNS: dict[str, dict[str, type]] = {
    "federated": _SCORED, "centralized": _SCORED,
    "divergence": {"round": int, "divergence": float, "federated_accuracy": float, "centralized_accuracy": float},
}
VALIDATION_COLUMNS: dict[str, type] = {"val_loss": float, "val_accuracy": float}
_TYPE_NAMES = {int: "an integer", float: "a finite number", list: "a list"}


def _malformed(row: object, columns: dict[str, type]) -> str | None:
    """Why a row of a run's 'rounds' table lacks one of ``columns`` or holds another type there (None: it is whole)."""
    if not isinstance(row, dict):
        return f"is not an object but {type(row).__name__}"
    for name, kind in columns.items():
        if name not in row:
            return f"lacks {name!r}"
        value = row[name]
        number = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
        if isinstance(value, bool) or not (number if kind is float else isinstance(value, kind)):
            return f"holds {name}={reprlib.repr(value)}, not {_TYPE_NAMES[kind]}"
    return None
