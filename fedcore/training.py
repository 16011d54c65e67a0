"""Local training's parts: models on flat parameter vectors, a stack of them trained in lock-step, SGD, batches.

A model's parameters are views into one flat vector (``FlatModel``), so averaging, server optimizers and SGD
are single vector operations. ``Stack`` holds W workers' flat vectors as the rows of one ``[W, P]`` tensor:
for stacks of Linear and ReLU layers (the 2NN, softmax regression) each layer's forward and backward pass is
one batched matmul over the workers and the gradient of the local loss (fedcore.losses) is written in closed
form; any other model (the CNN) is differentiated worker by worker with autograd. A stack of one is a single
model: the non-federated baseline, and the per-worker loop kept as the lock-step path's test oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fedcore.losses import LocalLoss
from fedcore.metrics import EVAL_CHUNK, FUSED_EVAL_CHUNK


def _is_linear_relu_stack(module: nn.Sequential) -> bool:
    """Linear, ReLU, Linear, ..., Linear (a leading Flatten allowed): gradients have a closed form."""
    kinds = [type(m) for m in module if not isinstance(m, nn.Flatten)]
    return kinds == [nn.Linear, nn.ReLU] * (len(kinds) // 2) + [nn.Linear]


@dataclass(frozen=True)
class Head:
    """Where the output layer (the classifier) lies in a model's flat vector: its weights, a ``classes`` x
    ``features`` matrix, then its biases; it ends the vector."""

    weight: slice
    bias: slice
    classes: int
    features: int

    @property
    def start(self) -> int:
        return self.weight.start


class FlatModel:
    """An ``nn.Sequential`` whose parameters live in one flat vector (``params``)."""

    def __init__(self, module: nn.Sequential, num_classes: int = 10) -> None:
        self.module = module
        self.num_classes = num_classes
        params = list(module.parameters())
        self.params = torch.cat([p.detach().flatten() for p in params])
        self.fused = _is_linear_relu_stack(module)
        self.eval_chunk = FUSED_EVAL_CHUNK if self.fused else EVAL_CHUNK  # images per forward pass when scoring
        self.shapes: list[tuple[int, ...]] = []
        offset = 0
        for p in params:
            n = p.numel()
            p.data = self.params[offset : offset + n].view_as(p)
            p.requires_grad_(not self.fused)
            self.shapes.append(tuple(p.shape))
            offset += n
        self._params = params
        out = [m for m in module if isinstance(m, nn.Linear)][-1]  # every model here ends in a Linear layer
        bias = slice(offset - out.bias.numel(), offset)
        self.head = Head(slice(bias.start - out.weight.numel(), bias.start), bias, *out.weight.shape)
        self.output_slice = slice(self.head.start, offset)  # output weights and biases in the flat vector
        self.output_bias_slice = bias

    def load(self, flat: torch.Tensor) -> None:
        """Set the parameters from a flat vector."""
        self.params.copy_(flat)

    def autograd(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor,
                 loss: LocalLoss, teacher: torch.Tensor | None) -> torch.Tensor:
        """The flat gradient of ``loss`` for one worker's parameters on one batch, by autograd."""
        self.load(params)
        with torch.enable_grad():
            value = loss.value(self.module(x)[None], y[None], valid[None], teacher)
            grads = torch.autograd.grad(value, self._params)
        return torch.cat([g.flatten() for g in grads])


class Stack:
    """The parameters of W copies of a model as the rows of ``params`` (row k: worker k's flat vector, in
    FlatModel's order) and their gradients in ``grad``. The first ``a`` rows are the workers still training
    (a stack is ordered by steps, most first)."""

    def __init__(self, model: FlatModel, params: torch.Tensor) -> None:
        self.model = model
        self.params = params
        self.grad = torch.zeros_like(params)
        self.layers: list[tuple[torch.Tensor, ...]] = []  # (weight, bias, weight grad, bias grad), [W, out, in]
        self._first: dict[int, list[tuple[torch.Tensor, ...]]] = {}  # the layers' views of the first a rows, by a
        if model.fused:
            offset, workers = 0, len(params)
            for weight_shape, bias_shape in zip(model.shapes[::2], model.shapes[1::2], strict=True):
                views = []
                for tensor in (params, self.grad):
                    w = tensor[:, offset : offset + weight_shape[0] * weight_shape[1]].view(workers, *weight_shape)
                    b = tensor[:, offset + w[0].numel() : offset + w[0].numel() + bias_shape[0]]
                    views += [w, b]
                self.layers.append((views[0], views[1], views[2], views[3]))
                offset += views[0][0].numel() + bias_shape[0]

    def _forward(self, layers: list[tuple[torch.Tensor, ...]], x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output for ``x`` [a, B, in] under ``layers`` (a rows): ReLUs applied, logits last."""
        hidden = [x.flatten(2)]
        for i, (w, b, *_) in enumerate(layers):
            h = torch.baddbmm(b[:, None, :], hidden[-1], w.transpose(1, 2))
            hidden.append(h.relu_() if i < len(layers) - 1 else h)
        return hidden

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """A stack of one model's logits [a, B, C] on every batch of ``x`` [a, B, ...] (FedNTD's teacher)."""
        if not self.model.fused:
            self.model.load(self.params[0])
            return self.model.module(x.flatten(0, 1)).view(*x.shape[:2], -1)
        return self._forward(self.layers, x.reshape(1, -1, *x.shape[2:]))[-1].view(*x.shape[:2], -1)

    def gradient(self, a: int, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, loss: LocalLoss,
                 teacher: torch.Tensor | None = None) -> None:
        """Write into ``grad[:a]`` the gradient of each of the first ``a`` workers' local loss (``loss``, theirs:
        ``rows(0, a)`` of the stack's) on its batch: ``x`` [a, B, ...], ``y`` [a, B], ``valid`` [a, B] (0 marks
        padding); ``teacher`` the global model's logits on the batches (FedNTD)."""
        if not self.model.fused:
            for k in range(a):
                t = None if teacher is None else teacher[k : k + 1]
                self.grad[k] = self.model.autograd(self.params[k], x[k], y[k], valid[k], loss.rows(k, k + 1), t)
            return
        if a not in self._first:
            self._first[a] = [tuple(v[:a] for v in layer) for layer in self.layers]
        layers = self._first[a]
        hidden = self._forward(layers, x)
        delta = loss.logit_gradient(hidden.pop(), y, valid, teacher)
        for i in range(len(layers) - 1, -1, -1):
            w, _, w_grad, b_grad = layers[i]
            torch.bmm(delta.transpose(1, 2), hidden[i], out=w_grad)
            torch.sum(delta, 1, out=b_grad)
            if i > 0:  # back through the ReLU: zero where its output was zero
                delta = torch.ops.aten.threshold_backward(torch.bmm(delta, w), hidden[i], 0)


class SGD:
    """torch.optim.SGD's update rule (weight decay, momentum without dampening) on rows of flat vectors; when
    workers finish, the rows it is given shrink to the first ones, and so does the momentum buffer."""

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffer: torch.Tensor | None = None

    def step(self, params: torch.Tensor, grad: torch.Tensor) -> None:
        if self.weight_decay:
            grad.add_(params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffer is None:
                self.buffer = grad.clone()
            else:
                self.buffer = self.buffer[: len(grad)].mul_(self.momentum).add_(grad)
            grad = self.buffer
        params.sub_(grad, alpha=self.lr)


def batch_positions(n: int, batch_size: int | None, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of positions in a set of ``n`` samples: shuffled epochs split into batches, the last of an
    epoch possibly short; ``batch_size=None`` (or one as large as the set) means full batch: every position."""
    if batch_size is None or batch_size >= n:
        while True:
            yield torch.arange(n)
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)


def batch_stream(
    x: torch.Tensor, y: torch.Tensor, batch_size: int | None, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, y) batches in the order of ``batch_positions``, each gathered when it is asked for."""
    for positions in batch_positions(len(y), batch_size, generator):
        on_device = positions.to(x.device)
        yield x.index_select(0, on_device), y.index_select(0, on_device)


def steps_for(n: int, batch_size: int | None, local_epochs: int | None, local_steps: int | None) -> int:
    """Local steps in one round: the given count, or the batches in the given epochs."""
    if local_steps is not None:
        return local_steps
    per_epoch = 1 if batch_size is None else -(-n // batch_size)
    return local_epochs * per_epoch
