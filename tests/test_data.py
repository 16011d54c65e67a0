import pytest
import torch

from fedcore import data


def test_mnist_is_normalised_in_memory(mnist):
    assert mnist.train_x.shape == (60_000, 1, 28, 28) and mnist.test_x.shape == (10_000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.float32
    assert abs(mnist.train_x.mean().item()) < 0.01 and abs(mnist.train_x.std().item() - 1) < 0.01
    assert torch.equal(torch.bincount(mnist.test_y), torch.bincount(mnist.test_y, minlength=10))


def test_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_dir() == tmp_path / "env"
    monkeypatch.delenv(data.ENV_VAR)
    assert data.data_dir() == data.REPO_DATA_DIR


def test_missing_data_offline_names_the_directory_and_the_variable(monkeypatch, tmp_path):
    import torchvision.datasets

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("mnist", tmp_path / "empty")
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "FEDCORE_DATA_DIR" in message


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load("cifar")
