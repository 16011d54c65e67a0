"""Local training on one flat parameter vector: the model, the batch stream, SGD and the loop.

A model's parameters (and gradients) are views into one flat tensor, so averaging, server optimizers
and SGD are single vector operations. For stacks of Linear and ReLU layers (the 2NN, softmax
regression) the gradient of the mean cross-entropy is written in closed form straight into the flat
gradient, skipping autograd's bookkeeping; any other model falls back to autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

Correction = Callable[[torch.Tensor, torch.Tensor], None]  # (grad, params) -> adds to grad in place


def _is_linear_relu_stack(module: nn.Sequential) -> bool:
    """Linear, ReLU, Linear, ..., Linear (a leading Flatten allowed): gradients have a closed form."""
    kinds = [type(m) for m in module if not isinstance(m, nn.Flatten)]
    return kinds == [nn.Linear, nn.ReLU] * (len(kinds) // 2) + [nn.Linear]


class FlatModel:
    """An ``nn.Sequential`` whose parameters and gradients live in two flat vectors."""

    def __init__(self, module: nn.Sequential, num_classes: int = 10) -> None:
        self.module = module
        self.num_classes = num_classes
        params = list(module.parameters())
        device = params[0].device
        self.params = torch.cat([p.detach().flatten() for p in params])
        self.grad = torch.zeros_like(self.params)
        self.fused = _is_linear_relu_stack(module)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = self.params[offset : offset + n].view_as(p)
            p.grad = self.grad[offset : offset + n].view_as(p)
            p.requires_grad_(not self.fused)
            offset += n
        self._params = params
        self._linears = [m for m in module if isinstance(m, nn.Linear)]
        out = self._linears[-1]  # every model here ends in a Linear layer: the output layer
        start = offset - out.weight.numel() - out.bias.numel()
        self.output_slice = slice(start, offset)  # output weights and biases in the flat vector
        self.output_bias_slice = slice(offset - out.bias.numel(), offset)
        self._eye = torch.eye(num_classes, device=device)

    def load(self, flat: torch.Tensor) -> None:
        """Set the parameters from a flat vector."""
        self.params.copy_(flat)

    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Write the gradient of the mean cross-entropy on (x, y) into ``self.grad``."""
        if not self.fused:
            loss = F.cross_entropy(self.module(x), y)
            for p, g in zip(self._params, torch.autograd.grad(loss, self._params), strict=True):
                p.grad.copy_(g)
            return
        hidden = [x.flatten(1)]
        for i, lin in enumerate(self._linears):
            h = torch.addmm(lin.bias, hidden[-1], lin.weight.t())
            hidden.append(h.relu_() if i < len(self._linears) - 1 else h)
        delta = torch.softmax(hidden.pop(), 1).sub_(self._eye[y]).div_(x.shape[0])
        for i in range(len(self._linears) - 1, -1, -1):
            lin = self._linears[i]
            torch.mm(delta.t(), hidden[i], out=lin.weight.grad)
            torch.sum(delta, 0, out=lin.bias.grad)
            if i > 0:  # back through the ReLU: zero where its output was zero
                delta = torch.ops.aten.threshold_backward(delta @ lin.weight, hidden[i], 0)


class SGD:
    """torch.optim.SGD's update rule (weight decay, momentum without dampening) on a flat vector."""

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffer: torch.Tensor | None = None

    def step(self, params: torch.Tensor, grad: torch.Tensor) -> None:
        if self.weight_decay:
            grad.add_(params, alpha=self.weight_decay)
        if self.momentum:
            self.buffer = grad.clone() if self.buffer is None else self.buffer.mul_(self.momentum).add_(grad)
            grad = self.buffer
        params.sub_(grad, alpha=self.lr)


def batch_stream(
    x: torch.Tensor, y: torch.Tensor, batch_size: int | None, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, y) batches: shuffled epochs, each batch gathered when it is asked for (a round often
    uses a small part of an epoch), the last batch of an epoch may be short.

    ``batch_size=None`` means full batch: every step sees all the samples.
    """
    if batch_size is None or batch_size >= len(y):
        while True:
            yield x, y
    while True:
        for batch in torch.randperm(len(y), generator=generator).to(x.device).split(batch_size):
            yield x[batch], y[batch]


def steps_for(n: int, batch_size: int | None, local_epochs: int | None, local_steps: int | None) -> int:
    """Local steps in one round: the given count, or the batches in the given epochs."""
    if local_steps is not None:
        return local_steps
    per_epoch = 1 if batch_size is None else -(-n // batch_size)
    return local_epochs * per_epoch


def train(
    model: FlatModel,
    optimizer: SGD,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    correction: Correction | None = None,
) -> int:
    """The local training loop: ``steps`` SGD steps; returns the number of samples seen."""
    seen = 0
    for _ in range(steps):
        x, y = next(batches)
        model.gradient(x, y)
        if correction is not None:
            correction(model.grad, model.params)
        optimizer.step(model.params, model.grad)
        seen += len(y)
    return seen
