import shutil
from pathlib import Path

import pytest
import torch

from fedcore import data
from fedcore.config import ConfigError
from fedcore.data import holdout

from .conftest import unreadable


def test_mnist_is_normalised_in_memory(mnist):
    assert mnist.train_x.shape == (60_000, 1, 28, 28) and mnist.test_x.shape == (10_000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.float32
    assert abs(mnist.train_x.mean().item()) < 0.01 and abs(mnist.train_x.std().item() - 1) < 0.01
    assert torch.equal(torch.bincount(mnist.test_y), torch.bincount(mnist.test_y, minlength=10))


def test_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert data.data_dirs(tmp_path / "arg") == [tmp_path / "arg", data.REPO_DATA_DIR]
    assert data.data_dirs() == [tmp_path / "a", tmp_path / "b", data.REPO_DATA_DIR]
    monkeypatch.delenv(data.ENV_VAR)
    assert data.data_dirs() == [data.REPO_DATA_DIR]


def test_the_first_directory_holding_the_dataset_is_used(monkeypatch, tmp_path, mnist):
    source = next(d for d in data.data_dirs() if (d / "MNIST" / "raw").exists())
    monkeypatch.setenv(data.ENV_VAR, f"{tmp_path / 'empty'}:{source}")
    data._CACHE.clear()
    assert torch.equal(data.load("mnist").test_y, mnist.test_y)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download possible, and no data/ folder in the repository."""
    import torchvision.datasets

    def fail(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirrors\n  one\n  two")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fail)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")


def test_missing_data_offline_names_the_argument_and_creates_nothing(offline, tmp_path):
    """An explicit data_dir (--data-dir) overrides the variable: the advice names it, and the failed
    download leaves no MNIST/raw/ behind."""
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("mnist", tmp_path / "empty")
    message = str(err.value)
    assert str(tmp_path / "empty") in message and str(tmp_path / "repo-data") in message
    assert "--data-dir" in message and "FEDCORE_DATA_DIR" not in message and "\n" not in message
    assert not (tmp_path / "empty").exists() and not (tmp_path / "repo-data").exists()


def test_missing_data_offline_without_argument_names_the_variable(offline, monkeypatch, tmp_path):
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "mine"))
    with pytest.raises(data.DataNotFoundError, match="set FEDCORE_DATA_DIR"):
        data.load("mnist")
    assert list((tmp_path / "mine").iterdir()) == []  # the folder was there before: kept, but left empty


def test_a_damaged_file_is_named_with_its_expected_size(mnist, tmp_path):
    source = next(d for d in data.data_dirs() if (d / "MNIST" / "raw").exists()) / "MNIST" / "raw"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.RAW_SIZES:
        (raw / name).symlink_to(source / name)
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte").write_bytes((source / "train-images-idx3-ubyte").read_bytes()[:1000])
    with pytest.raises(data.DataDamagedError) as err:
        data.load("mnist", tmp_path)
    assert str(raw / "train-images-idx3-ubyte") in str(err.value)
    assert "1,000 bytes, expected 47,040,016" in str(err.value)


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("cifar")


def test_fashion_mnist_loads_from_the_data_directory():
    """Fashion-MNIST (Debian's dataset-fashion-mnist, unpacked by `make fashion-mnist`, or downloaded)."""
    fashion = data.load("fashion-mnist")
    assert fashion.train_x.shape == (60_000, 1, 28, 28)
    assert torch.equal(torch.bincount(fashion.train_y), torch.full((10,), 6000))


def test_holdout_sets_apart_the_same_training_images_for_every_run(toy):
    rest, (vx, vy) = holdout(toy, 60)
    again, (vx2, _) = holdout(toy, 60)
    assert len(vy) == 60 and len(rest.train_y) == len(toy.train_y) - 60
    assert torch.equal(vx, vx2) and torch.equal(rest.train_x, again.train_x)  # one fixed draw
    rows = {tuple(r.flatten()[:8].tolist()) for r in toy.train_x}
    held = {tuple(r.flatten()[:8].tolist()) for r in vx}
    kept = {tuple(r.flatten()[:8].tolist()) for r in rest.train_x}
    assert held | kept == rows and not held & kept  # a split of the training images
    assert torch.equal(rest.test_x, toy.test_x)  # the test set is untouched
    with pytest.raises(ConfigError, match=r"validation must be in \[1, 599\]"):
        holdout(toy, 600)


def _copy_with_checksums(tmp_path: Path) -> Path:
    """A data folder in ``tmp_path`` holding MNIST/raw/ (links to the real files, the training labels a copy) and
    the real MNIST/SHA256SUMS beside raw/; the copied labels file."""
    source = next(d for d in data.data_dirs() if (d / "MNIST" / "SHA256SUMS").exists()) / "MNIST"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.RAW_SIZES:
        (raw / name).symlink_to(source / "raw" / name)
    (raw / "train-labels-idx1-ubyte").unlink()
    shutil.copyfile(source / "raw" / "train-labels-idx1-ubyte", raw / "train-labels-idx1-ubyte")
    shutil.copyfile(source / "SHA256SUMS", tmp_path / "MNIST" / "SHA256SUMS")
    return raw / "train-labels-idx1-ubyte"


def test_a_file_unlike_its_checksum_is_named_and_never_trained_on(tmp_path):
    """Issue 22, item 15: a training label changed to 200 (same size) loaded silently under the clean data's key."""
    labels = _copy_with_checksums(tmp_path)
    damaged = bytearray(labels.read_bytes())
    damaged[8 + 123] = 200  # after the 8-byte header: the 124th training label
    labels.write_bytes(bytes(damaged))
    with pytest.raises(data.DataDamagedError) as err:
        data.load("mnist", tmp_path)
    assert str(labels) in str(err.value) and "SHA-256" in str(err.value)


def test_checksums_are_checked_once_per_file_per_process(tmp_path, mnist):
    _copy_with_checksums(tmp_path / "a")
    _copy_with_checksums(tmp_path / "b")
    data._sha256.cache_clear()
    assert torch.equal(data.load("mnist", tmp_path / "a").train_y, mnist.train_y)
    assert data._sha256.cache_info().misses == 4  # the four raw files, hashed
    data._CACHE.clear()
    data.load("mnist", tmp_path / "b")  # the three linked files are the same files: not hashed again
    assert data._sha256.cache_info().misses == 5


def test_an_unreadable_data_folder_is_named(monkeypatch, tmp_path):
    """Issue 22, item 13: data/MNIST/raw with mode 000 gave a PermissionError traceback. The test runs as root on
    CI, where chmod stops nothing: the folder's files refuse to be looked at, as they do for other users."""
    raw = unreadable(monkeypatch, tmp_path)
    with pytest.raises(data.DataUnreadableError) as err:
        data.load("mnist", tmp_path)
    assert str(raw) in str(err.value) and "Permission denied" in str(err.value) and "--data-dir" in str(err.value)
