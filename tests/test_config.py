import json

import numpy as np
import pytest

from fedcore import ConfigError, RunConfig
from fedcore.config import FIELD_TYPES, FLOAT32_MAX, RANGES

BAD = [
    ({"bias": -0.1}, "bias", "[0, 1]"),
    ({"bias": 1.5}, "bias", "[0, 1]"),
    ({"workers": 1}, "workers", ">= 2"),
    ({"workers": 20, "bias": 1.0}, "bias", "< 1"),
    ({"allocation": "dirichlet", "alpha": 0.0}, "alpha", "> 0"),
    ({"allocation": "classes", "classes_per_worker": 0}, "classes_per_worker", "[1, 10]"),
    ({"allocation": "classes", "classes_per_worker": 11}, "classes_per_worker", "[1, 10]"),
    ({"allocation": "classes", "classes_per_worker": 1, "workers": 5}, "classes_per_worker", ">= 2"),
    ({"allocation": "shards", "shards_per_worker": 0}, "shards_per_worker", ">= 1"),
    ({"allocation": "nonsense"}, "allocation", "uniform"),
    ({"model": "resnet"}, "model", "mlp"),
    ({"rounds": 0}, "rounds", ">= 1"),
    ({"participation": 0.0}, "participation", "(0, 1]"),
    ({"local_epochs": 1, "local_steps": 5}, "local_epochs/local_steps", "exactly one"),
    ({"local_epochs": None, "local_steps": None}, "local_epochs/local_steps", "exactly one"),
    ({"local_epochs": 0}, "local_epochs", ">= 1"),
    ({"local_epochs": None, "local_steps": 0}, "local_steps", ">= 1"),
    ({"batch_size": 0}, "batch_size", ">= 1"),
    ({"lr": 0.0}, "lr", "> 0"),
    ({"lr_decay": 1.5}, "lr_decay", "(0, 1]"),
    ({"momentum": 1.0}, "momentum", "[0, 1)"),
    ({"weight_decay": -1.0}, "weight_decay", ">= 0"),
    ({"shared_fraction": 1.0}, "shared_fraction", "[0, 1)"),
    ({"eval_workers": 20_000}, "eval_workers", "[0, 10000]"),
    ({"seed": -1}, "seed", ">= 0"),
    ({"device": "tpu"}, "device", "auto"),
    ({"rounds": 2.5}, "rounds", "integer"),
    ({"lr": float("inf")}, "lr", "> 0 and finite"),
    ({"lr": float("nan")}, "lr", "> 0 and finite"),
    ({"weight_decay": float("inf")}, "weight_decay", "finite"),
    ({"strategy": "fedprox", "mu": float("inf")}, "mu", "finite"),
    ({"strategy": "fedadam", "tau": float("inf")}, "tau", "finite"),
    ({"server_lr": float("inf")}, "server_lr", "finite"),
    ({"allocation": "dirichlet", "alpha": float("inf")}, "alpha", "> 0 and finite"),
    ({"bias": float("nan")}, "bias", "[0, 1]"),
    ({"threads": 0}, "threads", "[1, 1024]"),
    ({"threads": None}, "threads", "[1, 1024]"),
    ({"threads": 1_000_000_000_000}, "threads", "[1, 1024]"),  # issue 22, item 11: overflowed in torch
    ({"seed": 2**64}, "seed", "< 2**64"),
    ({"validation": -1}, "validation", "[0, 30000]"),
    ({"validation": 60_000}, "validation", "[0, 30000]"),
    ({"strategy": "fedbabu", "model": "logistic"}, "strategy/model", "nothing would train"),  # issue 22, item 7
]


@pytest.mark.parametrize(("changes", "param", "allowed"), BAD)
def test_bad_values_name_the_parameter_and_range(changes, param, allowed):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes)
    assert err.value.param == param
    assert param in str(err.value) and allowed in str(err.value)


def test_key_is_stable_and_ignores_unused_knobs():
    base = RunConfig(allocation="uniform")
    assert base.key() == RunConfig(allocation="uniform").key()
    assert base.key() == RunConfig(allocation="uniform", bias=0.7, alpha=3.0).key()  # unused by uniform
    assert base.key() == RunConfig(allocation="uniform", data_dir="/elsewhere").key()  # how, not what
    assert base.key() == RunConfig(allocation="uniform", eval_workers=1000).key()  # recorded, not trained
    assert RunConfig(bias=0.2).key() != RunConfig(bias=0.3).key()
    assert RunConfig(seed=1).key() != RunConfig(seed=2).key()
    assert base.key("federated") != base.key("centralized")


def test_centralized_key_ignores_the_allocation():
    assert RunConfig(bias=0.0).key("centralized") == RunConfig(bias=1.0, eval_workers=100).key("centralized")
    assert RunConfig(lr=0.05).key("centralized") != RunConfig(lr=0.1).key("centralized")


def test_validation_changes_the_key_only_when_images_are_held_out():
    assert "validation" not in RunConfig().experiment()
    assert RunConfig(validation=6000).key() != RunConfig().key()
    assert RunConfig(validation=6000).experiment()["validation"] == 6000


def test_one_experiment_has_one_key_however_its_numbers_are_written():
    """Issue 22, item 6: ints for float fields, numpy scalars and integral floats for int fields are turned into
    the field's type on construction (and on replace), so they share the key of the canonical spelling."""
    assert RunConfig(bias=1).key() == RunConfig(bias=1.0).key()
    assert RunConfig(lr=1).key() == RunConfig(lr=1.0).key()
    assert RunConfig().replace(bias=1).key() == RunConfig(bias=1.0).key()
    assert RunConfig(bias=np.float32(0.5)).key() == RunConfig(bias=0.5).key()
    written = RunConfig(seed=np.int64(3), workers=np.int32(20), rounds=3.0, lr=np.float64(0.1), batch_size=np.int64(8))
    assert written == RunConfig(seed=3, workers=20, rounds=3, lr=0.1, batch_size=8)
    assert written.key() == RunConfig(seed=3, workers=20, rounds=3, lr=0.1, batch_size=8).key()
    assert [type(written.seed), type(written.rounds), type(written.lr), type(RunConfig(bias=1).bias)] == [
        int, int, float, float]
    json.dumps(written.experiment())  # numpy scalars are gone: the payload of the key serialises


@pytest.mark.parametrize(
    ("changes", "param", "allowed"),
    [
        ({"rs_alpha": True}, "rs_alpha", "a number in (0, 1]"),
        ({"workers": True}, "workers", "an integer >= 2"),
        ({"seed": np.bool_(False)}, "seed", "an integer >= 0"),
        ({"lr": "0.1"}, "lr", "a number > 0 and finite"),
        ({"bias": "0.5"}, "bias", "a number"),
        ({"rs_alpha": None}, "rs_alpha", "a number in (0, 1]"),
        ({"model": None}, "model", "one of mlp"),
        ({"batch_size": "full"}, "batch_size", "an integer >= 1 or None"),
        ({"rounds": 2.5}, "rounds", "an integer >= 1"),
        ({"seed": float("inf")}, "seed", "an integer >= 0"),
        ({"data_dir": 3}, "data_dir", "a path or None"),
    ],
)
def test_values_not_of_the_fields_type_are_refused_naming_the_field(changes, param, allowed):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes)
    assert err.value.param == param and str(err.value).startswith(f"{param} must be {allowed}")


FLOAT_FIELDS = [name for name, (kind, _) in FIELD_TYPES.items() if kind is float]
# those with no upper bound of their own (lr, mu, weight_decay, aws_lr, alpha, ...): float32's range is theirs
UNBOUNDED = [name for name in FLOAT_FIELDS if name not in RANGES or "finite" in RANGES[name][0]]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [1e308, 10**400])
def test_finite_floats_beyond_float32_are_refused_naming_the_field(name, value):
    """Issue 22, item 12: --lr 1e308 (and any float field) overflowed in torch after the run started."""
    with pytest.raises(ConfigError) as err:
        RunConfig(**{name: value})
    assert err.value.param == name
    if name in UNBOUNDED or value == 10**400:
        assert str(err.value).startswith(f"{name} must be within float32's range, at most 3.403e+38 in absolute value")


def test_the_largest_float32_is_accepted():
    assert RunConfig(lr=FLOAT32_MAX).lr == FLOAT32_MAX
