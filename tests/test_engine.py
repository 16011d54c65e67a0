import json

import pytest
import torch

from fedcore import RunConfig, run
from fedcore.engine import TrainingDiverged, run_centralized, run_federated
from fedcore.reference import run_reference
from fedcore.store import RunStore

from .conftest import synthetic


def _params_per_round(config, data):
    seen = []
    run_federated(config, progress=False, data=data, probe=lambda r, params, updates: seen.append(params.clone()))
    return seen


@pytest.mark.parametrize("model", ["mlp", "logistic", "cnn"])
def test_engine_matches_the_textbook_reference(toy, model):
    config = RunConfig(model=model, bias=0.5, rounds=3, local_epochs=None, local_steps=7, batch_size=16,
                       lr=0.05, momentum=0.5, weight_decay=1e-3, lr_decay=0.9, device="cpu", threads=1)
    fast = _params_per_round(config, toy)
    slow = run_reference(config, toy)
    assert len(fast) == len(slow) == 3
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fast[0], fast[-1])  # it trained


def test_engine_matches_reference_with_local_epochs(toy):
    config = RunConfig(bias=0.9, rounds=2, local_epochs=2, batch_size=25, device="cpu", threads=1)
    for f, s in zip(_params_per_round(config, toy), run_reference(config, toy), strict=True):
        torch.testing.assert_close(f, s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [0.0, 0.5, 1.0])
def test_one_full_batch_step_is_centralized_gradient_descent(mnist, bias):
    """FedAvg weighted by sample count, one full-batch step per round, is GD on the union at any bias."""
    config = RunConfig(bias=bias, rounds=3, local_epochs=None, local_steps=1, batch_size=None, lr=0.5,
                       weight_decay=1e-4, device="cpu")
    fed = run_federated(config, progress=False, data=mnist)
    cen = run_centralized(config, progress=False, data=mnist)
    for a, b in zip(fed.rounds, cen.rounds, strict=True):
        # float32 sums of 60,000 gradients in another order: any correct kernel is far within 1e-4
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
        assert a["predicted"] == pytest.approx(b["predicted"], abs=3)
    assert fed.rounds[-1]["test_loss"] < fed.rounds[0]["test_loss"] - 0.1


def _strip_timing(result):
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result.rounds]
    return rows, result.classes, result.workers, result.confusion, result.allocation


def test_same_config_and_seed_give_identical_history(toy):
    config = RunConfig(bias=0.8, rounds=3, participation=0.5, eval_workers=50, device="cpu")
    a = run_federated(config, progress=False, data=toy)
    b = run_federated(config, progress=False, data=toy)
    assert _strip_timing(a) == _strip_timing(b)
    c = run_federated(config.replace(seed=1), progress=False, data=toy)
    assert _strip_timing(a) != _strip_timing(c)


def test_participation_chooses_that_share_of_workers(toy):
    result = run_federated(RunConfig(rounds=4, participation=0.3, eval_workers=20), progress=False, data=toy)
    per_round = [sum(1 for w in result.workers if w["round"] == r) for r in range(1, 5)]
    assert per_round == [3, 3, 3, 3]
    assert len({tuple(w["worker"] for w in result.workers if w["round"] == r) for r in range(1, 5)}) > 1


def test_workers_at_full_bias_predict_only_their_digit(mnist):
    config = RunConfig(bias=1.0, rounds=1, local_epochs=None, local_steps=30, eval_workers=2000)
    result = run_federated(config, progress=False, data=mnist)
    assert len(result.workers) == 10
    for w in result.workers:
        assert w["predicted"][w["worker"]] > 0.9 * 2000  # almost everything is called its own digit
        assert w["test_accuracy"] < 0.2
    best_worker = max(w["test_accuracy"] for w in result.workers)
    assert result.final_accuracy > best_worker + 0.05  # ... yet their average beats every one of them


def test_centralized_records_one_epoch_per_round_of_one_local_epoch(toy):
    result = run_centralized(RunConfig(rounds=2, batch_size=32), progress=False, data=toy)
    assert [r["samples"] for r in result.rounds] == [0, 600, 1200]


def test_diverging_loss_stops_with_a_clear_message(toy):
    with pytest.raises(TrainingDiverged, match="round 1") as err:
        run_federated(RunConfig(rounds=3, lr=1e6, allocation="uniform"), progress=False, data=toy)
    assert err.value.result.diverged and len(err.value.result.rounds) == 1  # round 0 only


def test_a_diverged_run_is_stored_and_shown_to_sweeps(monkeypatch, tmp_path, toy):
    calls = []

    def counting(config, progress=True):
        calls.append(config)
        return run_federated(config, progress=progress, data=toy)

    monkeypatch.setattr("fedcore.runner.KINDS", {"federated": counting})
    store, config = RunStore(tmp_path), RunConfig(rounds=3, lr=1e6, allocation="uniform")
    with pytest.raises(TrainingDiverged, match=r"nan|inf"):
        run(config, store=store, progress=False)
    swept = run(config, store=store, progress=False, allow_divergence=True)
    assert len(calls) == 1 and "round 1" in swept.diverged


def test_run_store_returns_the_stored_run(monkeypatch, tmp_path, toy):
    store = RunStore(tmp_path)
    calls = []
    original = run_federated

    def counting(config, progress=True):
        calls.append(config)
        return original(config, progress=progress, data=toy)

    monkeypatch.setattr("fedcore.runner.KINDS", {"federated": counting})
    config = RunConfig(rounds=2)
    first = run(config, store=store, progress=False)
    again = run(config, store=store, progress=False)
    assert len(calls) == 1
    assert again.to_dict() == json.loads(json.dumps(first.to_dict()))
    assert json.loads(store.path(config.key()).read_text())["config"]["rounds"] == 2
    assert set(first.versions) >= {"torch", "python", "fedcore_engine"}


def test_interrupted_write_leaves_nothing(monkeypatch, tmp_path, toy):
    store = RunStore(tmp_path)
    result = run_federated(RunConfig(rounds=1), progress=False, data=toy)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(result)
    assert list(tmp_path.iterdir()) == []


def test_synthetic_helper_is_learnable():
    data = synthetic(n_train=300)
    result = run_centralized(RunConfig(rounds=3, batch_size=10, lr=0.05), progress=False, data=data)
    assert result.final_accuracy > 0.8


def test_update_geometry_is_recorded_every_round(toy):
    result = run_federated(RunConfig(bias=1.0, rounds=2, local_epochs=None, local_steps=5), progress=False, data=toy)
    rows = [w for w in result.workers if w["round"] == 1]
    assert [w["worker"] for w in rows] == list(range(10))
    for i, w in enumerate(rows):
        # a cosine is in [-1, 1] whatever the kernel's rounding: the metric is clamped to its range
        assert w["cosine"][i] == pytest.approx(1.0, abs=1e-4) and all(-1 <= c <= 1 for c in w["cosine"])
        assert 0 < w["output_share"] <= 1 and w["update_norm"] > 0 and len(w["output_bias"]) == 10
    assert "test_accuracy" not in rows[0]  # only with eval_workers
    # at full bias each worker pushes the output bias of its own digit up
    start = result.rounds[0]["output_bias"]
    for w in rows:
        pushed = [after - before for after, before in zip(w["output_bias"], start, strict=True)]
        assert max(range(10), key=pushed.__getitem__) == w["worker"]


def test_weight_divergence_is_zero_for_one_full_batch_step_and_grows_with_local_work(toy):
    from fedcore.engine import run_divergence

    exact = RunConfig(bias=1.0, rounds=3, local_epochs=None, local_steps=1, batch_size=None, lr=0.1)
    assert max(r["divergence"] for r in run_divergence(exact, progress=False, data=toy).rounds) < 1e-5
    drift = run_divergence(exact.replace(local_steps=20, batch_size=10), progress=False, data=toy)
    assert drift.rounds[0]["divergence"] == 0.0 and drift.rounds[-1]["divergence"] > 0.01


def test_validation_holds_out_the_same_images_for_every_seed_and_is_scored_each_round(toy):
    config = RunConfig(bias=1.0, rounds=2, local_epochs=None, local_steps=3, batch_size=16, validation=100,
                       device="cpu", threads=1)
    seen = []

    def shards(rnd, params, updates):
        seen.append(sum(u.num_samples for u in updates))

    run_federated(config, progress=False, data=toy, probe=shards)
    result = run_federated(config.replace(seed=1), progress=False, data=toy)
    assert seen[0] == len(toy.train_y) - 100  # the workers share the images not held out
    for row in result.rounds:
        assert 0.0 <= row["val_accuracy"] <= 1.0 and row["val_loss"] > 0
    assert result.rounds[-1]["val_accuracy"] != result.rounds[0]["val_accuracy"]  # it is the model's score
    plain = run_federated(config.replace(validation=0), progress=False, data=toy)
    assert "val_accuracy" not in plain.rounds[0]
    assert run_centralized(config, progress=False, data=toy).rounds[-1]["val_loss"] > 0
