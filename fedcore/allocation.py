"""How the training images are split among workers, without replacement: one class per scheme.

Each partitioner checks its parameters against the number of workers and classes (``check``) and
splits a label vector (``split``) into per-worker index arrays, deterministically for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedcore.errors import ConfigError

if TYPE_CHECKING:
    from fedcore.config import RunConfig


@dataclass(frozen=True)
class Allocation:
    """Per-worker indices into the training set and the workers x classes count table."""

    indices: list[torch.Tensor]
    counts: torch.Tensor  # shape (workers, classes), int64

    @classmethod
    def from_indices(cls, indices: list[np.ndarray], labels: np.ndarray, num_classes: int) -> Allocation:
        counts = np.stack([np.bincount(labels[i], minlength=num_classes) for i in indices])
        return cls([torch.from_numpy(np.sort(i)).long() for i in indices], torch.from_numpy(counts).long())


def label_skew(counts: torch.Tensor) -> float:
    """How far the workers' digit mixes are from the whole set's: the total-variation distance between
    each worker's label distribution and the pooled one, averaged with weights by worker size.
    0 for identical mixes; 1 - 1/classes when each worker holds a single class of a balanced set."""
    counts = counts.double()
    sizes = counts.sum(1)
    pooled = counts.sum(0) / sizes.sum()
    distance = 0.5 * (counts / sizes[:, None] - pooled).abs().sum(1)
    return float((distance * sizes).sum() / sizes.sum())


class Partitioner:
    """Base class: ``check`` validates before any work, ``split`` allocates."""

    def check(self, workers: int, num_classes: int) -> None:
        if workers < 2:
            raise ConfigError(f"workers must be an integer >= 2; got {workers!r}")

    def split(self, labels: torch.Tensor, workers: int, seed: int, num_classes: int = 10) -> Allocation:
        y = labels.cpu().numpy()
        self.check(workers, num_classes)
        parts = self._split(y, workers, num_classes, np.random.default_rng(seed))
        empty = sum(len(p) == 0 for p in parts)
        if empty:
            raise ConfigError(
                f"workers must be few enough that each gets data: {self!r} on {len(y)} images leaves {empty} of "
                f"{workers} workers without any; use fewer workers or other allocation parameters; got {workers}",
                param="workers",
            )
        return Allocation.from_indices(parts, y, num_classes)

    def _split(self, y: np.ndarray, workers: int, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
        raise NotImplementedError


def _by_class(y: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled indices of each class."""
    return [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]


@dataclass(frozen=True)
class Uniform(Partitioner):
    """Shuffle the whole set and cut it into equal shares."""

    def _split(self, y, workers, num_classes, rng):
        return np.array_split(rng.permutation(len(y)), workers)


@dataclass(frozen=True)
class Biased(Partitioner):
    """Digit d's home worker (d mod W) gets the share ``bias`` of it; the others split the rest evenly.

    bias = 1/W is uniform in expectation; bias = 1 gives each of ten workers exactly one digit.
    """

    bias: float

    def check(self, workers: int, num_classes: int) -> None:
        super().check(workers, num_classes)
        if not 0.0 <= self.bias <= 1.0:
            raise ConfigError(f"bias must be in [0, 1]; got {self.bias!r}")
        if self.bias == 1.0 and workers > num_classes:
            raise ConfigError(
                f"bias must be < 1 when workers ({workers}) > classes ({num_classes}): "
                "at bias 1 the workers without a home digit would get no data"
            )

    def _split(self, y, workers, num_classes, rng):
        parts: list[list[np.ndarray]] = [[] for _ in range(workers)]
        for c, idx in enumerate(_by_class(y, num_classes, rng)):
            home = c % workers
            n_home = round(self.bias * len(idx))
            parts[home].append(idx[:n_home])
            others = [k for k in range(workers) if k != home]
            for k, chunk in zip(others, np.array_split(idx[n_home:], len(others)), strict=True):
                parts[k].append(chunk)
        return [np.concatenate(p) for p in parts]


@dataclass(frozen=True)
class Dirichlet(Partitioner):
    """Each class is spread over the workers with proportions drawn from Dirichlet(alpha) (Hsu et al. 2019)."""

    alpha: float
    min_size: int = 10
    max_tries: int = 100

    def check(self, workers: int, num_classes: int) -> None:
        super().check(workers, num_classes)
        if not 0 < self.alpha < math.inf:
            raise ConfigError(f"alpha must be > 0 and finite; got {self.alpha!r}")

    def _split(self, y, workers, num_classes, rng):
        for _ in range(self.max_tries):
            parts: list[list[np.ndarray]] = [[] for _ in range(workers)]
            for idx in _by_class(y, num_classes, rng):
                cuts = (np.cumsum(rng.dirichlet([self.alpha] * workers)) * len(idx)).astype(int)[:-1]
                for k, chunk in enumerate(np.split(idx, cuts)):
                    parts[k].append(chunk)
            merged = [np.concatenate(p) for p in parts]
            if min(len(p) for p in merged) >= self.min_size:
                return merged
        raise ConfigError(
            f"alpha must be larger for {workers} workers: each of {self.max_tries} draws left a worker with fewer "
            f"than {self.min_size} images (or use fewer workers); got {self.alpha!r}"
        )


@dataclass(frozen=True)
class ClassesPerWorker(Partitioner):
    """Each worker holds k distinct classes; each class is split evenly among its holders (NIID-Bench #C=k)."""

    k: int

    def check(self, workers: int, num_classes: int) -> None:
        super().check(workers, num_classes)
        if not (isinstance(self.k, int) and 1 <= self.k <= num_classes):
            raise ConfigError(f"classes_per_worker must be in [1, {num_classes}]; got {self.k!r}")
        if workers * self.k < num_classes:
            raise ConfigError(
                f"classes_per_worker must be >= {-(-num_classes // workers)} with {workers} workers, "
                f"so that every class has a holder; got {self.k!r}"
            )

    def _split(self, y, workers, num_classes, rng):
        held = []
        for w in range(workers):
            first = w % num_classes
            rest = rng.choice([c for c in range(num_classes) if c != first], self.k - 1, replace=False)
            held.append({first, *rest.tolist()})
        parts: list[list[np.ndarray]] = [[] for _ in range(workers)]
        for c, idx in enumerate(_by_class(y, num_classes, rng)):
            holders = [w for w in range(workers) if c in held[w]]
            for w, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
                parts[w].append(chunk)
        return [np.concatenate(p) for p in parts]


@dataclass(frozen=True)
class Shards(Partitioner):
    """Sort by label, cut into workers x s shards, deal s random shards to each worker (McMahan et al. 2017)."""

    shards_per_worker: int

    def check(self, workers: int, num_classes: int) -> None:
        super().check(workers, num_classes)
        if not (isinstance(self.shards_per_worker, int) and self.shards_per_worker >= 1):
            raise ConfigError(f"shards_per_worker must be an integer >= 1; got {self.shards_per_worker!r}")

    def _split(self, y, workers, num_classes, rng):
        order = np.argsort(y + rng.random(len(y)), kind="stable")  # by label, shuffled within a label
        shards = np.array_split(order, workers * self.shards_per_worker)
        deal = rng.permutation(len(shards)).reshape(workers, self.shards_per_worker)
        return [np.concatenate([shards[s] for s in row]) for row in deal]


def partitioner_for(config: RunConfig) -> Partitioner:
    """The partitioner a run config asks for."""
    return {
        "uniform": Uniform,
        "biased": lambda: Biased(config.bias),
        "dirichlet": lambda: Dirichlet(config.alpha),
        "classes": lambda: ClassesPerWorker(config.classes_per_worker),
        "shards": lambda: Shards(config.shards_per_worker),
    }[config.allocation]()
