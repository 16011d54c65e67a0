import pytest
import torch

from fedcore import data


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


def test_missing_data_offline_names_the_directory_and_the_variable(monkeypatch, tmp_path):
    import torchvision.datasets

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    monkeypatch.setattr(data, "REPO_DATA_DIR", tmp_path / "repo-data")
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("mnist", tmp_path / "empty")
    message = str(err.value)
    assert str(tmp_path / "empty") in message and str(tmp_path / "repo-data") in message
    assert "FEDCORE_DATA_DIR" in message


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("cifar")


def test_fashion_mnist_loads_from_the_data_directory():
    """Fashion-MNIST (Debian's dataset-fashion-mnist, unpacked by `make fashion-mnist`, or downloaded)."""
    fashion = data.load("fashion-mnist")
    assert fashion.train_x.shape == (60_000, 1, 28, 28)
    assert torch.equal(torch.bincount(fashion.train_y), torch.full((10,), 6000))
