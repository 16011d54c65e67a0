"""Shared fixtures: a small synthetic dataset for fast unit tests, real MNIST where a test needs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedcore import data as datasets
from fedcore.data import Dataset


def synthetic(n_train: int = 600, n_test: int = 200, seed: int = 0) -> Dataset:
    """Ten Gaussian classes of 28x28 'images', balanced, learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(10, 1, 28, 28, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        return means[y] + 2.0 * torch.randn(n, 1, 28, 28, generator=g), y

    (tx, ty), (vx, vy) = draw(n_train), draw(n_test)
    return Dataset("synthetic", tx, ty, vx, vy)


@pytest.fixture(scope="session")
def toy() -> Dataset:
    return synthetic()


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """Real MNIST from $FEDCORE_DATA_DIR (CI: ../shared/data); a missing copy fails, never skips."""
    return datasets.load("mnist")


def unreadable(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    """``root``/MNIST/raw, made, whose files refuse to be looked at (PermissionError), as a folder of mode 000
    does for another user: tests run as root, where chmod stops nothing. Returns the folder."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    stat = Path.stat

    def refused(self: Path, *args: object, **kwargs: object) -> object:
        if raw in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", refused)
    return raw
