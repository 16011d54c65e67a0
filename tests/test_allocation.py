import numpy as np
import pytest
import torch

from fedcore.allocation import Biased, ClassesPerWorker, Dirichlet, Shards, Uniform, label_skew
from fedcore.config import ConfigError

LABELS = torch.arange(2000) % 10
SCHEMES = [Uniform(), Biased(0.0), Biased(0.5), Biased(1.0), Dirichlet(0.3), ClassesPerWorker(2), Shards(2)]


@pytest.mark.parametrize("scheme", SCHEMES, ids=repr)
def test_split_is_a_partition_without_replacement(scheme):
    alloc = scheme.split(LABELS, 10, seed=3)
    everything = torch.cat(alloc.indices)
    assert len(everything) == len(LABELS) and len(torch.unique(everything)) == len(LABELS)
    for k, idx in enumerate(alloc.indices):
        assert torch.equal(alloc.counts[k], torch.bincount(LABELS[idx], minlength=10))


@pytest.mark.parametrize("scheme", SCHEMES, ids=repr)
def test_split_is_deterministic_for_a_seed(scheme):
    a, b = scheme.split(LABELS, 10, seed=7), scheme.split(LABELS, 10, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
    if not isinstance(scheme, Biased | ClassesPerWorker) or scheme == Biased(0.5):
        c = scheme.split(LABELS, 10, seed=8)
        assert not all(torch.equal(x, y) for x, y in zip(a.indices, c.indices, strict=True))


def test_bias_one_gives_each_worker_one_digit_on_mnist(mnist):
    alloc = Biased(1.0).split(mnist.train_y, 10, seed=0)
    expected = torch.diag(torch.bincount(mnist.train_y, minlength=10))
    assert torch.equal(alloc.counts, expected)


def test_bias_point_two_on_mnist(mnist):
    counts = Biased(0.2).split(mnist.train_y, 10, seed=0).counts
    per_digit = torch.bincount(mnist.train_y, minlength=10)
    for d in range(10):
        home = counts[d % 10, d]
        assert home == round(0.2 * per_digit[d].item())  # ~1,200 of each digit
        others = torch.cat([counts[:d, d], counts[d + 1 :, d]])
        assert others.max() - others.min() <= 1  # the rest evenly, ~530 each
        assert abs(others.float().mean() - 0.8 * per_digit[d] / 9) < 1
    assert counts.sum() == len(mnist.train_y)


def test_bias_one_over_w_is_uniform_in_expectation():
    counts = Biased(0.1).split(LABELS, 10, seed=0).counts
    assert (counts - 20).abs().max() <= 1


def test_fewer_workers_than_digits_gives_each_several_home_digits():
    counts = Biased(1.0).split(LABELS, 4, seed=0).counts
    for d in range(10):
        assert counts[d % 4, d] == 200 and counts[:, d].sum() == 200


def test_classes_per_worker_holds_k_classes():
    counts = ClassesPerWorker(3).split(LABELS, 10, seed=0).counts
    assert ((counts > 0).sum(1) == 3).all()


def test_small_alpha_is_more_skewed_than_large():
    def skew(alpha):
        c = Dirichlet(alpha).split(LABELS, 10, seed=0).counts.float()
        return (c.max(1).values / c.sum(1)).mean()

    assert skew(0.1) > skew(100.0) + 0.3


def test_shards_per_worker_one_gives_about_one_class():
    counts = Shards(1).split(LABELS, 10, seed=0).counts
    assert ((counts > 0).sum(1) <= 2).all()


@pytest.mark.parametrize(
    ("scheme", "workers", "param"),
    [
        (Biased(1.2), 10, "bias"),
        (Biased(1.0), 11, "bias"),
        (Uniform(), 1, "workers"),
        (Dirichlet(0.0), 10, "alpha"),
        (ClassesPerWorker(0), 10, "classes_per_worker"),
        (ClassesPerWorker(1), 5, "classes_per_worker"),
        (Shards(0), 10, "shards_per_worker"),
    ],
)
def test_bad_requests_fail_before_work(scheme, workers, param):
    with pytest.raises(ConfigError, match=param):
        scheme.split(LABELS, workers, seed=0)


def test_counts_table_matches_numpy():
    alloc = Dirichlet(0.5).split(LABELS, 5, seed=1)
    for k, idx in enumerate(alloc.indices):
        assert alloc.counts[k].tolist() == np.bincount(LABELS[idx].numpy(), minlength=10).tolist()


def test_label_skew_runs_from_zero_to_one_minus_one_over_classes():
    assert label_skew(Biased(0.1).split(LABELS, 10, seed=0).counts) < 0.01
    assert label_skew(Biased(1.0).split(LABELS, 10, seed=0).counts) == pytest.approx(0.9)
    mild, heavy = (label_skew(Biased(b).split(LABELS, 10, seed=0).counts) for b in (0.5, 0.9))
    assert 0.01 < mild < heavy < 0.9
