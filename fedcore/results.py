"""A finished run: its configuration, the software that ran it and its per-round history as tidy tables."""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from fedcore.config import ENGINE_VERSION

Row = dict[str, object]


def package_versions() -> dict[str, str]:
    """Versions of Python, the engine and the numerical packages."""
    out = {"python": platform.python_version(), "fedcore_engine": ENGINE_VERSION}
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

    def column(self, name: str, table: str = "rounds") -> list:
        """One column of a table, e.g. ``result.column("test_accuracy")``."""
        return [row[name] for row in getattr(self, table)]

    @property
    def final_accuracy(self) -> float:
        return float(self.rounds[-1]["test_accuracy"])

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> RunResult:
        return cls(**d)
