"""Lock-step local training against the per-worker loop it replaced (its oracle), batch plans, and a run
continued from a shorter one."""

import pytest
import torch

from fedcore import RunConfig
from fedcore.config import STRATEGIES
from fedcore.engine import run_federated
from fedcore.local import generator, plan
from fedcore.training import batch_positions

# The knobs that make each strategy do something in three short rounds.
KNOBS = {"fedavgm": dict(server_lr=0.5, server_momentum=0.5), "fedprox": dict(mu=0.5),
         "fedadam": dict(server_lr=0.01), "scaffold": dict(server_lr=0.8), "fedrs": dict(rs_alpha=0.3),
         "fedlc": dict(lc_tau=0.8), "fedntd": dict(ntd_beta=1.5, ntd_temperature=2.0),
         "fedaws": dict(aws_steps=5, aws_lr=0.05)}


def _params(config: RunConfig, data, lockstep: bool) -> list[torch.Tensor]:
    seen = []
    run_federated(config, progress=False, data=data, lockstep=lockstep,
                  probe=lambda r, p, u: seen.append(torch.cat([p, *(x.params for x in u)])))
    return seen


UNEQUAL = dict(allocation="dirichlet", alpha=0.5)  # shares of 40 to 88 of the 600 samples


# Every strategy on the 2NN (closed form); on the CNN (autograd, worker by worker) the losses and the fixed head.
@pytest.mark.parametrize(("strategy", "model"), [(s, "mlp") for s in STRATEGIES]
                         + [(s, "cnn") for s in ("fedavg", "fedrs", "fedlc", "fedntd", "fedbabu")])
def test_lockstep_matches_the_per_worker_loop_with_unequal_step_counts(toy, strategy, model):
    """One local epoch over unequal shares, batches of 16 that leave short last batches, momentum and weight
    decay: workers finish at different steps. Measured here: bit for bit; the stated tolerance is what any
    correct float32 kernel meets over a few dozen steps (a wrong mask or step count moves weights by far more)."""
    config = RunConfig(model=model, **UNEQUAL, rounds=2, local_epochs=1, batch_size=16, lr=0.05, momentum=0.5,
                       weight_decay=1e-3, strategy=strategy, participation=0.7, device="cpu", threads=1,
                       processes=1, **KNOBS.get(strategy, {}))
    lock, each = _params(config, toy, True), _params(config, toy, False)
    assert len(lock) == len(each) == 2
    for a, b in zip(lock, each, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(lock[0], lock[1])  # it trained


def test_the_shares_are_unequal_so_steps_differ(toy):
    from fedcore.engine import allocate

    _, shards = allocate(RunConfig(**UNEQUAL), toy.train_y)
    steps = {-(-len(s) // 16) for s in shards}
    assert len(steps) > 1 and any(len(s) % 16 for s in shards)


def test_a_plan_draws_each_workers_batches_as_its_own_stream_would():
    shards = [torch.arange(100, 137), torch.arange(200, 220), torch.arange(300, 310)]
    steps, batch = [5, 3, 1], 8
    p = plan(shards, steps, batch, [generator(7, 1, k) for k in range(3)])
    assert p.index.shape == (5, 3, 8) and p.active == [3, 2, 2, 1, 1]
    for k, (rows, n) in enumerate(zip(shards, steps, strict=True)):
        stream = batch_positions(len(rows), batch, generator(7, 1, k))
        for t in range(n):
            expected = rows[next(stream)]
            m = len(expected)
            assert torch.equal(p.index[t, k, :m], expected) and p.valid[t, k, :m].eq(1).all()
            assert p.valid[t, k, m:].eq(0).all() and p.index[t, k, m:].eq(rows[0]).all()  # padding, masked
        assert p.valid[n:, k].eq(0).all()
    assert p.valid[4, 0].sum() == 37 - 4 * 8  # worker 0's epoch of 37 ends on a short batch


def test_full_batch_plans_every_row_of_each_worker():
    shards = [torch.arange(5), torch.arange(10, 13)]
    p = plan(shards, [2, 2], None, [generator(0), generator(1)])
    assert p.index.shape == (2, 2, 5)
    assert torch.equal(p.index[1, 1, :3], torch.tensor([10, 11, 12])) and p.valid[1, 1].tolist() == [1, 1, 1, 0, 0]


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold", "fedntd"])
def test_the_stack_size_leaves_the_results_as_they_are(toy, strategy, monkeypatch):
    """Stacks of the model's group size against one stack of all: measured bit for bit here (the stated tolerance
    is what any correct float32 kernel meets)."""
    from fedcore import local

    config = RunConfig(**UNEQUAL, rounds=2, local_epochs=1, batch_size=16, momentum=0.5, strategy=strategy,
                       device="cpu", threads=1, processes=1, **KNOBS.get(strategy, {}))
    assert local.GROUPS[config.model] < config.workers
    grouped = _params(config, toy, True)
    monkeypatch.setitem(local.GROUPS, config.model, config.workers)
    whole = _params(config, toy, True)
    assert len(grouped) == len(whole) == 2
    for a, b in zip(grouped, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
