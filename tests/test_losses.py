"""The local objective: every closed-form gradient against autograd of its value, and the neutral settings."""

from dataclasses import replace

import pytest
import torch

from fedcore.losses import LocalLoss
from fedcore.models import build
from fedcore.training import FlatModel, Stack

W, B, C = 3, 5, 4


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits [W, B, C], labels, a padding mask (worker 2's last two rows are padding) and a teacher's logits."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(W, B, C, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C, (W, B), generator=g)
    valid = torch.ones(W, B, dtype=torch.float64)
    valid[2, -2:] = 0.0
    return z, y, valid, torch.randn(W, B, C, generator=g, dtype=torch.float64)


LOSSES = {
    "plain": LocalLoss(),
    "fedrs": LocalLoss(scale=torch.tensor([[1.0, 0.5, 0.5, 0.75]] * W, dtype=torch.float64)),
    "fedlc": LocalLoss(shift=torch.tensor([[-0.3, -1.0, -0.1, -2.0]] * W, dtype=torch.float64)),
    "fedntd": LocalLoss(distill=0.7, temperature=2.0),
    "fedrs centered": LocalLoss(scale=torch.tensor([[1.0, 0.5, 0.5, 0.75]] * W, dtype=torch.float64), centered=True),
}


@pytest.mark.parametrize("name", LOSSES)
def test_the_closed_form_gradient_is_autograds(name):
    loss = LOSSES[name]
    z, y, valid, teacher = batch()
    z.requires_grad_(True)
    (expected,) = torch.autograd.grad(loss.value(z, y, valid, teacher), z)
    got = loss.logit_gradient(z.detach().clone(), y, valid, teacher)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)  # float64: only rounding differs
    assert torch.all(got[2, -2:] == 0)  # padding adds nothing


def test_the_value_is_each_workers_mean_cross_entropy_summed():
    z, y, valid, _ = batch()
    by_hand = sum(torch.nn.functional.cross_entropy(z[k, : int(valid[k].sum())], y[k, : int(valid[k].sum())])
                  for k in range(W))
    torch.testing.assert_close(LocalLoss().value(z, y, valid), by_hand)


def test_not_true_distillation_by_hand():
    """Two classes besides the label: the KL divergence of the teacher's from the student's softmax over them."""
    z = torch.tensor([[[5.0, 1.0, 0.0]]], dtype=torch.float64)  # label 0: classes 1 and 2 are not true
    teacher = torch.tensor([[[0.0, 0.0, 0.0]]], dtype=torch.float64)
    y, valid = torch.tensor([[0]]), torch.ones(1, 1, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy(z[0], y[0])
    q = torch.softmax(torch.tensor([1.0, 0.0], dtype=torch.float64), 0)  # the student's, at temperature 1
    kl = (0.5 * (torch.log(torch.tensor(0.5, dtype=torch.float64)) - q.log())).sum()  # the teacher's is uniform
    torch.testing.assert_close(LocalLoss(distill=2.0).value(z, y, valid, teacher), ce + 2.0 * kl)


@pytest.mark.parametrize("neutral", [LocalLoss(scale=torch.ones(W, C)), LocalLoss(shift=torch.zeros(W, C) * -1.0),
                                     LocalLoss(distill=0.0, temperature=3.0)], ids=["fedrs", "fedlc", "fedntd"])
def test_neutral_settings_give_plain_cross_entropys_gradient_bit_for_bit(neutral):
    z, y, valid, teacher = (t.float() if t.is_floating_point() else t for t in batch())
    assert torch.equal(neutral.logit_gradient(z.clone(), y, valid, teacher), LocalLoss().logit_gradient(z, y, valid))


@pytest.mark.parametrize("name", LOSSES)
def test_a_stacks_closed_form_gradient_is_autograds_on_a_real_model(name):
    """The 2NN's batched closed-form gradient of every local loss against autograd, worker by worker."""
    torch.manual_seed(0)
    model = FlatModel(build("mlp").double())
    g = torch.Generator().manual_seed(1)
    params = model.params + 0.01 * torch.randn(W, len(model.params), generator=g, dtype=torch.float64)
    x = torch.randn(W, B, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (W, B), generator=g)
    valid = torch.ones(W, B, dtype=torch.float64)
    valid[1, 3:] = 0.0
    loss = LOSSES[name]
    if loss.scale is not None:
        loss = replace(loss, scale=torch.linspace(0.2, 1.0, 10, dtype=torch.float64).repeat(W, 1))
    if loss.shift is not None:
        loss = LocalLoss(shift=-torch.linspace(0.0, 1.5, 10, dtype=torch.float64).repeat(W, 1))
    teacher = torch.randn(W, B, 10, generator=g, dtype=torch.float64) if loss.distill else None
    stack = Stack(model, params.clone())
    stack.gradient(W, x, y, valid, loss, teacher)
    autograd = FlatModel(build("mlp").double())
    for p in autograd._params:
        p.requires_grad_(True)
    for k in range(W):
        t = None if teacher is None else teacher[k : k + 1]
        expected = autograd.autograd(params[k], x[k], y[k], valid[k], loss.rows(k, k + 1), t)
        torch.testing.assert_close(stack.grad[k], expected, rtol=1e-9, atol=1e-12)


def test_plain_cross_entropy_has_no_common_part_and_the_restricted_softmax_has_one_that_centering_removes():
    z, y, valid, _ = batch()
    sums = {name: LOSSES[name].logit_gradient(z.clone(), y, valid).sum(2)
            for name in ("plain", "fedrs", "fedrs centered")}
    torch.testing.assert_close(sums["plain"], torch.zeros_like(sums["plain"]), rtol=0, atol=1e-12)
    torch.testing.assert_close(sums["fedrs centered"], torch.zeros_like(sums["plain"]), rtol=0, atol=1e-12)
    assert sums["fedrs"].abs().max() > 0.01  # absent classes scaled down: every logit is pushed together
