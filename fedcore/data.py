"""Datasets as in-memory tensors, normalised once: no per-sample transforms in the training path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ENV_VAR = "FEDCORE_DATA_DIR"
# name -> (torchvision class, mean, std of the training pixels in [0, 1])
DATASETS = {
    "mnist": ("MNIST", 0.1307, 0.3081),
    "fashion-mnist": ("FashionMNIST", 0.2860, 0.3530),
}


class DataNotFoundError(FileNotFoundError):
    """The dataset is neither on disk nor downloadable."""


@dataclass(frozen=True)
class Dataset:
    """Train and test images, shape (N, 1, 28, 28) float32 normalised, with int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = 10

    def to(self, device: torch.device) -> Dataset:
        move = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")}
        return Dataset(self.name, num_classes=self.num_classes, **move)


def data_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Where datasets are looked for, in order: the argument, else each folder of $FEDCORE_DATA_DIR
    (separated by ``os.pathsep``), then data/ in the repository."""
    if explicit is not None:
        first = [Path(explicit)]
    else:
        first = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return [*first, *([REPO_DATA_DIR] if REPO_DATA_DIR not in first else [])]


def _present(cls: type, root: Path) -> bool:
    """Whether torchvision finds the dataset's uncompressed files in ``root``."""
    raw = root / cls.__name__ / "raw"
    return all((raw / Path(name).stem).exists() for name, _ in cls.resources)


_CACHE: dict[tuple[str, Path], Dataset] = {}


def load(name: str = "mnist", root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset through torchvision from the first data directory that holds it, else download it
    into the first directory (where the internet is reachable)."""
    import torchvision.datasets

    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    cls_name, mean, std = DATASETS[name]
    cls = getattr(torchvision.datasets, cls_name)
    tried = data_dirs(root)
    where = next((d for d in tried if _present(cls, d)), tried[0]).resolve()
    if (name, where) in _CACHE:
        return _CACHE[(name, where)]
    try:
        train, test = (cls(str(where), train=t, download=True) for t in (True, False))
    except (RuntimeError, OSError) as err:  # torchvision raises RuntimeError when every mirror fails
        raise DataNotFoundError(
            f"{cls_name} is in none of {', '.join(str(d) for d in tried)} (looked for {cls_name}/raw/ in each) "
            f"and could not be downloaded into {where} ({err}). Set {ENV_VAR} to a folder holding "
            f"{cls_name}/raw/, e.g. export {ENV_VAR}=../shared/data"
        ) from err

    def images(ds: object) -> torch.Tensor:
        return ((ds.data.float() / 255.0 - mean) / std).unsqueeze(1).contiguous()

    dataset = Dataset(name, images(train), train.targets.long(), images(test), test.targets.long())
    _CACHE[(name, where)] = dataset
    return dataset
