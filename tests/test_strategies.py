"""The aggregation strategies: each rule by hand on tiny vectors, neutral settings against FedAvg, short runs."""

import math
from fractions import Fraction

import pytest
import torch

from fedcore import engine
from fedcore.config import STRATEGIES, ConfigError, RunConfig
from fedcore.engine import run_federated
from fedcore.models import build
from fedcore.strategies import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedAwS,
    FedLC,
    FedNTD,
    FedProx,
    FedRS,
    Scaffold,
    Update,
    spread_out,
    strategy_for,
    weighted_average,
)
from fedcore.training import FlatModel

GLOBAL = [0.0, 1.0, 2.0]
# Sample counts 1 and 3: the weighted average is (1 * y0 + 3 * y1) / 4 = [4, -2, 1.5]; delta = [4, -3, -0.5].
Y0, Y1 = [1.0, 1.0, 0.0], [5.0, -3.0, 2.0]


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def two_updates(y0=Y0, y1=Y1, steps=(1, 1), lrs=(1.0, 1.0), workers=(0, 1)) -> list[Update]:
    return [Update(workers[0], t(y0), 1, steps[0], lrs[0]), Update(workers[1], t(y1), 3, steps[1], lrs[1])]


def test_fedavg_is_the_sample_weighted_average():
    assert torch.equal(FedAvg().aggregate(t(GLOBAL), two_updates()), t([4, -2, 1.5]))
    assert torch.equal(weighted_average(two_updates(), weighted=False), t([3, -1, 1]))


def test_fedavgm_by_hand_over_two_rounds():
    s = FedAvgM(server_lr=0.5, server_momentum=0.9)
    g1 = s.aggregate(t(GLOBAL), two_updates())
    # v = delta = [4, -3, -0.5]; global + 0.5 v
    torch.testing.assert_close(g1, t([2, -0.5, 1.75]))
    g2 = s.aggregate(g1, two_updates())
    # delta = [4, -2, 1.5] - g1 = [2, -1.5, -0.25]; v = 0.9 [4, -3, -0.5] + delta = [5.6, -4.2, -0.7]
    torch.testing.assert_close(s.velocity, t([5.6, -4.2, -0.7]))
    torch.testing.assert_close(g2, t([2 + 2.8, -0.5 - 2.1, 1.75 - 0.35]))


def test_fedadam_by_hand_over_two_rounds():
    s = FedAdam(server_lr=1.0, beta1=0.5, beta2=0.75, tau=0.5)
    g1 = s.aggregate(t(GLOBAL), two_updates())
    # m = 0.5 delta = [2, -1.5, -0.25]; v = 0.25 delta^2 = [4, 2.25, 0.0625]; sqrt(v) + tau = [2.5, 2, 0.75]
    torch.testing.assert_close(g1, t([0 + 2 / 2.5, 1 - 1.5 / 2, 2 - 0.25 / 0.75]))
    g2 = s.aggregate(g1, two_updates())
    expected = []
    for avg, g, m1, v1 in zip([4, -2, 1.5], g1.tolist(), [2, -1.5, -0.25], [4, 2.25, 0.0625], strict=True):
        delta = avg - g
        m = 0.5 * m1 + 0.5 * delta
        v = 0.75 * v1 + 0.25 * delta**2
        expected.append(g + m / (math.sqrt(v) + 0.5))
    torch.testing.assert_close(g2, t(expected))


def test_fedprox_correction_is_mu_times_the_distance_to_the_global_model():
    s = FedProx(mu=0.5)
    global_params, params = t(GLOBAL), t([1, 2, 5])
    grad = t([1, -1, 0])
    s.correction(3, global_params)(grad, params)
    torch.testing.assert_close(grad, t([1, -1, 0]) + 0.5 * (params - global_params))
    assert torch.equal(params, t([1, 2, 5])) and torch.equal(global_params, t(GLOBAL))  # only grad changes
    assert torch.equal(s.aggregate(global_params, two_updates()), t([4, -2, 1.5]))


def _shift(strategy: Scaffold, worker: int, global_params: torch.Tensor) -> torch.Tensor:
    grad = torch.zeros_like(global_params)
    strategy.correction(worker, global_params)(grad, global_params)
    return grad


def test_scaffold_by_hand_over_two_rounds():
    f = Fraction
    s = Scaffold(workers=3, server_lr=0.5)
    g0 = t(GLOBAL)
    assert torch.equal(_shift(s, 0, g0), t([0, 0, 0]))  # all control variates start at zero
    # Round 1: workers 0 (K lr = 2 * 0.5 = 1) and 2 (K lr = 4 * 0.5 = 2); sample counts 1 and 3 are ignored.
    g1 = s.aggregate(g0, two_updates(steps=(2, 4), lrs=(0.5, 0.5), workers=(0, 2)))
    c0 = [-1, 0, 2]  # (g - y0) / 1
    c2 = [f(-5, 2), 2, 0]  # (g - y1) / 2 = [-5, 4, 0] / 2
    c = [(a + b) / 3 for a, b in zip(c0, c2, strict=True)]  # [-7/6, 2/3, 2/3]: sum over 3 workers / 3
    torch.testing.assert_close(s.c_worker[0], t(c0))
    torch.testing.assert_close(s.c_worker[2], t(c2))
    torch.testing.assert_close(s.c, t(c))
    assert 1 not in s.c_worker
    # plain mean of y - g = ([1, 0, -2] + [5, -4, 0]) / 2 = [3, -2, -1]; g + 0.5 * that
    torch.testing.assert_close(g1, t([1.5, 0, 1.5]))

    # Round 2: the corrections are c - c_i (worker 1 has not taken part yet: c_1 = 0).
    torch.testing.assert_close(_shift(s, 0, g1), t([f(-1, 6), f(2, 3), f(-4, 3)]))
    torch.testing.assert_close(_shift(s, 1, g1), t(c))
    y0, y1 = [2, 0, 1], [1.5, 1, 1.5]
    g2 = s.aggregate(g1, two_updates(y0, y1, steps=(1, 2), lrs=(1.0, 0.25), workers=(0, 1)))
    new_c0 = [f(-1, 3), f(-2, 3), f(11, 6)]  # c0 - c + (g1 - y0) / 1 = c0 - c + [-0.5, 0, 0.5]
    new_c1 = [f(7, 6), f(-8, 3), f(-2, 3)]  # 0 - c + (g1 - y1) / 0.5 = -c + [0, -2, 0]
    # c + (new_c0 - c0 + new_c1 - 0) / 3 = c + [11/6, -10/3, -5/6] / 3
    torch.testing.assert_close(s.c, t([f(-5, 9), f(-4, 9), f(7, 18)]))
    torch.testing.assert_close(s.c_worker[0], t(new_c0))
    torch.testing.assert_close(s.c_worker[1], t(new_c1))
    torch.testing.assert_close(s.c_worker[2], t(c2))  # absent workers keep theirs
    # g1 + 0.5 * mean([0.5, 0, -0.5], [0, 1, 0]) = g1 + 0.5 * [0.25, 0.5, -0.25]
    torch.testing.assert_close(g2, t([1.625, 0.25, 1.375]))


def _config(**changes) -> RunConfig:
    base = dict(bias=0.5, rounds=3, participation=0.5, local_epochs=None, local_steps=5, batch_size=16,
                lr=0.05, device="cpu", threads=1)
    return RunConfig(**{**base, **changes})


def _history(config: RunConfig, data) -> tuple[list[dict], list[torch.Tensor]]:
    params = []
    result = run_federated(config, progress=False, data=data, probe=lambda r, p, u: params.append(p.clone()))
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result.rounds]
    return rows, params


@pytest.mark.parametrize(
    "neutral",
    [dict(strategy="fedavgm", server_momentum=0.0, server_lr=1.0), dict(strategy="fedprox", mu=0.0),
     dict(strategy="fedrs", rs_alpha=1.0), dict(strategy="fedlc", lc_tau=0.0), dict(strategy="fedntd", ntd_beta=0.0),
     dict(strategy="fedaws", aws_steps=0)],
    ids=["fedavgm", "fedprox", "fedrs", "fedlc", "fedntd", "fedaws"],
)
def test_neutral_settings_are_fedavg_bit_for_bit(toy, neutral):
    rows, params = _history(_config(), toy)
    other_rows, other_params = _history(_config(**neutral), toy)
    assert other_rows == rows
    assert len(params) == 3 and all(torch.equal(a, b) for a, b in zip(params, other_params, strict=True))
    assert not torch.equal(params[0], params[-1])  # it trained


def test_fedprox_pulls_the_workers_towards_the_global_model(toy):
    _, plain = _history(_config(), toy)
    _, prox = _history(_config(strategy="fedprox", mu=5.0), toy)
    assert not torch.equal(plain[0], prox[0])


def test_scaffold_control_variates_after_one_real_round(toy, monkeypatch):
    config = _config(strategy="scaffold", rounds=1, lr=0.1)
    made = []
    monkeypatch.setattr(engine, "strategy_for", lambda c, head: made.append(strategy_for(c, head)) or made[-1])
    seen = []
    run_federated(config, progress=False, data=toy, probe=lambda r, p, u: seen.append((p.clone(), u)))
    _, _, model = engine._setup(config, toy)  # the initial global model
    g0 = model.params
    (g1, updates), s = seen[0], made[0]
    assert len(updates) == 5 and {u.steps for u in updates} == {5}
    for u in updates:
        torch.testing.assert_close(s.c_worker[u.worker], (g0 - u.params) / (5 * 0.1))
    torch.testing.assert_close(s.c, sum(s.c_worker.values()) / 10)  # N = all 10 workers, not the 5 chosen
    torch.testing.assert_close(g1, sum(u.params for u in updates) / 5)  # server_lr 1: the plain mean


# FedAdam takes a step of about server_lr per coordinate: the shared default server_lr=1.0 wrecks a model.
END_TO_END = {"fedadam": dict(server_lr=0.01)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_learns_in_three_rounds(toy, strategy):
    config = _config(strategy=strategy, participation=1.0, **END_TO_END.get(strategy, {}))
    assert type(strategy_for(config, FlatModel(build(config.model)).head)).name == strategy
    result = run_federated(config, progress=False, data=toy)
    accuracy = [row["test_accuracy"] for row in result.rounds]
    assert len(accuracy) == 4 and accuracy[-1] > accuracy[0] + 0.2, accuracy


def test_strategy_for_passes_the_configured_knobs():
    m = strategy_for(RunConfig(strategy="fedavgm", server_lr=0.5, server_momentum=0.3))
    assert (m.server_lr, m.server_momentum) == (0.5, 0.3)
    assert strategy_for(RunConfig(strategy="fedprox", mu=0.2)).mu == 0.2
    a = strategy_for(RunConfig(strategy="fedadam", server_lr=0.1, beta1=0.5, beta2=0.6, tau=0.01))
    assert (a.server_lr, a.beta1, a.beta2, a.tau) == (0.1, 0.5, 0.6, 0.01)
    sc = strategy_for(RunConfig(strategy="scaffold", workers=7, server_lr=0.8))
    assert (sc.workers, sc.server_lr) == (7, 0.8)
    assert strategy_for(RunConfig(strategy="fedrs", rs_alpha=0.2)).alpha == 0.2
    assert strategy_for(RunConfig(strategy="fedlc", lc_tau=0.3)).tau == 0.3
    ntd = strategy_for(RunConfig(strategy="fedntd", ntd_beta=0.4, ntd_temperature=2.0))
    assert (ntd.beta, ntd.temperature) == (0.4, 2.0)
    head = _head(RunConfig()).head
    aws = strategy_for(RunConfig(strategy="fedaws", aws_margin=0.6, aws_steps=7, aws_lr=0.2), head)
    assert (aws.head, aws.margin, aws.steps, aws.lr) == (head, 0.6, 7, 0.2)
    assert strategy_for(RunConfig(strategy="fedbabu"), head).trains_head is False
    with pytest.raises(ValueError, match="fedbabu needs the model's head"):
        strategy_for(RunConfig(strategy="fedbabu"))
    assert strategy_for(RunConfig()) is not strategy_for(RunConfig())  # fresh server state per run


def test_strategy_knobs_only_enter_their_own_strategies_keys():
    knobs = dict(mu=0.5, server_lr=0.1, server_momentum=0.5, beta1=0.1, beta2=0.2, tau=0.1, rs_alpha=0.1,
                 lc_tau=0.1, ntd_beta=0.1, ntd_temperature=2.0, aws_margin=0.5, aws_steps=3, aws_lr=0.5)
    assert RunConfig(**knobs).key() == RunConfig().key()  # FedAvg ignores them all
    for strategy, changes in [("fedavgm", dict(server_momentum=0.5)), ("fedprox", dict(mu=0.5)),
                              ("fedadam", dict(tau=0.1)), ("scaffold", dict(server_lr=0.5)),
                              ("fedrs", dict(rs_alpha=0.1)), ("fedlc", dict(lc_tau=0.1)),
                              ("fedntd", dict(ntd_temperature=2.0)), ("fedaws", dict(aws_steps=3))]:
        base = RunConfig(strategy=strategy)
        assert base.replace(**changes).key() != base.key()
        assert base.replace(**changes).key("centralized") == RunConfig().key("centralized")
    assert RunConfig(strategy="fedprox").replace(server_lr=0.5).key() == RunConfig(strategy="fedprox").key()


@pytest.mark.parametrize(
    ("name", "value"),
    [("server_lr", 0.0), ("server_lr", -1.0), ("server_momentum", 1.0), ("server_momentum", -0.1), ("mu", -1.0),
     ("beta1", 1.0), ("beta2", -0.5), ("beta2", 1.0), ("tau", 0.0), ("mu", math.nan), ("rs_alpha", 0.0),
     ("rs_alpha", 1.5), ("lc_tau", -0.1), ("ntd_beta", math.inf), ("ntd_temperature", 0.0), ("aws_margin", 0.0),
     ("aws_margin", 1.1), ("aws_steps", -1), ("aws_steps", 2.5), ("aws_lr", 0.0)],
)
def test_bad_strategy_knobs_raise_config_error_naming_them(name, value):
    with pytest.raises(ConfigError) as err:
        RunConfig(**{name: value})
    assert err.value.param == name and str(err.value).startswith(name + " must be")


def test_fedrs_scales_each_class_by_its_count_and_absent_classes_by_alpha():
    counts = t([[0, 5, 10], [4, 0, 0]])
    scale = FedRS(alpha=0.5).local_loss(counts).scale
    torch.testing.assert_close(scale, t([[0.5, 0.75, 1.0], [1.0, 0.5, 0.5]]))  # alpha + (1 - alpha) n_c / max n


def test_fedlc_shifts_by_tau_over_the_fourth_root_of_the_count_an_absent_class_as_one_sample():
    shift = FedLC(tau=2.0).local_loss(t([[0, 1, 16, 81]])).shift
    torch.testing.assert_close(shift, t([[-2.0, -2.0, -1.0, -2.0 / 3]]))


def test_fedntd_distils_at_its_temperature():
    loss = FedNTD(beta=0.5, temperature=3.0).local_loss(t([[1, 2]]))
    assert (loss.distill, loss.temperature, loss.scale, loss.shift) == (0.5, 3.0, None, None)


def test_spread_out_by_hand():
    """Two orthogonal rows: cosine distance 0.5, below a margin of 0.8 by 0.3; the penalty, both ordered pairs,
    is 2 * 0.3^2 / 2^2 = 0.045. Its gradient turns each row away from the other, keeping nothing else."""
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    first = spread_out(w, margin=0.8, steps=1, lr=0.1)
    cos_before = torch.nn.functional.cosine_similarity(w[0], w[1], dim=0)
    cos_after = torch.nn.functional.cosine_similarity(first[0], first[1], dim=0)
    assert cos_after < cos_before - 1e-3
    # By hand: with u0 = e0, u1 = e1, dL/dcos(0,1) = 2 * (2 * 0.3 * 0.5) / 4 = 0.15 (two ordered pairs), so
    # dL/dw0 = 0.15 * (u1 - cos u0) = [0, 0.15]; one SGD step at lr 0.1 moves w0 by [0, -0.015].
    torch.testing.assert_close(first, torch.tensor([[1.0, -0.015], [-0.015, 1.0]]))
    far = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # distance 1: beyond any margin, nothing moves
    assert torch.equal(spread_out(far, margin=0.8, steps=5, lr=0.1), far)
    assert torch.equal(spread_out(w, margin=0.8, steps=0, lr=0.1), w)


def _head(config: RunConfig) -> FlatModel:
    return FlatModel(build(config.model))


def test_fedaws_repairs_only_the_output_weights_after_the_average():
    model = _head(RunConfig())
    n = len(model.params)
    updates = [Update(0, torch.randn(n), 1, 1, 0.1), Update(1, torch.randn(n), 3, 1, 0.1)]
    plain = FedAvg().aggregate(model.params, updates)
    repaired = FedAwS(model.head, margin=0.8, steps=10, lr=0.5).aggregate(model.params, updates)
    body, weight = slice(0, model.head.start), model.head.weight
    assert torch.equal(repaired[body], plain[body]) and torch.equal(repaired[model.head.bias], plain[model.head.bias])
    assert not torch.equal(repaired[weight], plain[weight])


def test_fedbabu_keeps_the_head_exactly_and_trains_the_body(toy):
    config = _config(strategy="fedbabu", participation=1.0)
    _, params = _history(config, toy)
    _, _, model = engine._setup(config, toy)
    start = model.head.start
    assert all(torch.equal(p[start:], model.params[start:]) for p in params)  # not an average of equal copies
    assert not torch.equal(params[-1][:start], model.params[:start])


def test_label_skew_losses_see_only_each_workers_own_class_counts(toy, monkeypatch):
    seen = []
    original = FedRS.local_loss
    monkeypatch.setattr(FedRS, "local_loss", lambda self, counts: seen.append(counts.clone()) or original(self,
                                                                                                         counts))
    config = _config(strategy="fedrs", bias=1.0, rounds=1, participation=1.0, processes=1)
    run_federated(config, progress=False, data=toy)
    _, shards = engine.allocate(config, toy.train_y)
    expected = torch.stack([torch.bincount(toy.train_y[s], minlength=10) for s in shards]).float()
    counts = torch.cat(seen)  # one call per lock-step stack (fedcore.local.GROUPS[model] workers)
    assert sorted(map(tuple, counts.tolist())) == sorted(map(tuple, expected.tolist()))
    assert all((row > 0).sum() == 1 for row in counts)  # bias 1: each worker holds one digit


def test_fedrs_drifts_every_logit_together_and_removing_the_common_gradient_part_stops_it(toy):
    """At one class per worker the mean output bias (the bias part of the mean logit) stays where it started
    under FedAvg, whose workers' logit gradients sum to zero, climbs under FedRS, and stays put again once the
    common part of each gradient is removed (the book's diagnostic)."""
    from fedcore.geometry import output_bias_drift

    drift = {}
    for strategy in ("fedavg", "fedrs", "fedrs-centered"):
        config = _config(strategy=strategy, rs_alpha=0.5, bias=1.0, rounds=4, participation=1.0, processes=1)
        _, moved = output_bias_drift(run_federated(config, progress=False, data=toy))
        assert moved[0] == 0.0
        drift[strategy] = moved[-1]
    assert abs(drift["fedavg"]) < 1e-5 and abs(drift["fedrs-centered"]) < 1e-5  # float rounding only
    assert drift["fedrs"] > 1e-3
