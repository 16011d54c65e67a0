"""Datasets as in-memory tensors, normalised once: no per-sample transforms in the training path."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from fedcore.config import ConfigError

REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
ENV_VAR = "FEDCORE_DATA_DIR"
# name -> (torchvision class, mean, std of the training pixels in [0, 1])
DATASETS = {
    "mnist": ("MNIST", 0.1307, 0.3081),
    "fashion-mnist": ("FashionMNIST", 0.2860, 0.3530),
}


# The raw files of MNIST and Fashion-MNIST (the same format and counts) and their sizes in bytes.
RAW_SIZES = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}


CHECKSUMS = "SHA256SUMS"  # beside raw/ (e.g. MNIST/SHA256SUMS), as sha256sum writes it: "HEX  raw/NAME" a line

VALIDATION_SEED = 7_2026  # one fixed draw: the same held-out images for every seed, run and setting


class DataNotFoundError(FileNotFoundError):
    """The dataset is neither on disk nor downloadable."""


class DataDamagedError(OSError):
    """A raw file of the dataset has the wrong size or checksum (cut short, damaged or altered); the message names
    it."""


class DataUnreadableError(OSError):
    """The dataset's folder or a file of it cannot be read (no permission); the message names it."""


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


def holdout(dataset: Dataset, n: int) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]:
    """The dataset less ``n`` training images held out for validation, and those images (x, y): the first
    ``n`` of one fixed permutation of the training set (never the test set), the same in every run."""
    if not 0 < n < len(dataset.train_y):
        raise ConfigError(f"validation must be in [1, {len(dataset.train_y) - 1}] for {dataset.name}'s "
                         f"{len(dataset.train_y)} training images; got {n}")
    order = torch.randperm(len(dataset.train_y), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held, kept = order[:n].sort().values.to(dataset.train_y.device), order[n:].sort().values.to(dataset.train_y.device)
    rest = Dataset(dataset.name, dataset.train_x[kept], dataset.train_y[kept], dataset.test_x, dataset.test_y,
                   dataset.num_classes)
    return rest, (dataset.train_x[held], dataset.train_y[held])


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


def check_raw_files(cls_name: str, root: Path) -> None:
    """Raise DataDamagedError naming the first raw file in ``root`` whose size is not the expected one."""
    for name, size in RAW_SIZES.items():
        path = root / cls_name / "raw" / name
        if path.exists() and path.stat().st_size != size:
            raise DataDamagedError(
                f"{path} is {path.stat().st_size:,} bytes, expected {size:,}: the file is cut short or damaged; "
                "replace it with a whole copy, or delete it so that it is downloaded again"
            )


@cache
def _sha256(path: Path) -> str:
    """The SHA-256 of a file, hashed once per process (``path`` resolved: links to one file share it)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_checksums(folder: Path) -> None:
    """Raise DataDamagedError naming the first file listed in ``folder``/SHA256SUMS (paths relative to ``folder``)
    whose SHA-256 is another; nothing to check without that file. A listed file not there yet is left to the
    download (torchvision checks what it fetches)."""
    sums = folder / CHECKSUMS
    if not sums.is_file():
        return
    for line in sums.read_text(errors="replace").splitlines():
        digest, _, name = line.strip().partition(" ")
        path = folder / name.strip().lstrip("*")  # '*' marks a file hashed in binary mode
        if not line.strip() or not path.exists():
            continue
        if len(digest) != 64 or _sha256(path.resolve()) != digest.lower():
            raise DataDamagedError(
                f"{path} does not match its SHA-256 in {sums}: the file is damaged or altered; replace it with a "
                "whole copy, or delete it so that it is downloaded again"
            )


def _outermost_missing(path: Path) -> Path | None:
    """The outermost folder on the way to ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing


_CACHE: dict[tuple[str, Path], Dataset] = {}


def load(name: str = "mnist", root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset through torchvision from the first data directory that holds it, else download it
    into the first directory (where the internet is reachable). Its raw files are checked first: their sizes,
    and their checksums where a SHA256SUMS lies beside them (DataDamagedError); a folder or file that cannot be
    read is a DataUnreadableError, data neither there nor downloadable a DataNotFoundError."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    try:
        return _load(name, data_dirs(root), root is not None)
    except PermissionError as err:
        raise DataUnreadableError(
            f"{err.filename or data_dirs(root)[0]} cannot be read ({err.strerror}): give this user read access to "
            f"the {DATASETS[name][0]} folder and its files, or point {'data_dir (--data-dir)' if root else ENV_VAR} "
            "at a readable copy"
        ) from err


def _load(name: str, tried: list[Path], explicit: bool) -> Dataset:
    """``load`` from the folders ``tried`` (``explicit``: given as data_dir, which the advice names)."""
    import torchvision.datasets

    cls_name, mean, std = DATASETS[name]
    cls = getattr(torchvision.datasets, cls_name)
    where = next((d for d in tried if _present(cls, d)), tried[0]).resolve()
    if (name, where) in _CACHE:
        return _CACHE[(name, where)]
    check_raw_files(cls_name, where)
    check_checksums(where / cls_name)
    created = _outermost_missing(where / cls_name)
    try:
        train, test = (cls(str(where), train=t, download=True) for t in (True, False))
    except PermissionError:
        raise
    except (RuntimeError, OSError) as err:  # torchvision raises RuntimeError when every mirror fails
        if created is not None:  # leave no empty folders behind a failed download
            shutil.rmtree(created, ignore_errors=True)
        advice = (f"point data_dir (--data-dir) at a folder holding {cls_name}/raw/" if explicit else
                  f"set {ENV_VAR} to a folder holding {cls_name}/raw/, e.g. export {ENV_VAR}=../shared/data")
        reason = " ".join(str(err).split())[:300]
        raise DataNotFoundError(
            f"{cls_name} is in none of {', '.join(str(d) for d in tried)} (looked for {cls_name}/raw/ in each) "
            f"and could not be downloaded into {where} ({reason}); {advice}"
        ) from err

    def images(ds: object) -> torch.Tensor:
        return ((ds.data.float() / 255.0 - mean) / std).unsqueeze(1).contiguous()

    dataset = Dataset(name, images(train), train.targets.long(), images(test), test.targets.long())
    _CACHE[(name, where)] = dataset
    return dataset
