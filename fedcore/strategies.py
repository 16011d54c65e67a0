"""Aggregation strategies: how the manager turns the workers' models into the next global model.

One small class per rule, all on flat parameter vectors. A strategy may also correct the workers'
local gradients (FedProx, SCAFFOLD) through ``correction``. Strategies with server state (momentum,
moments, control variates) keep it on the instance: ``strategy_for`` builds a fresh one per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from fedcore.training import Correction

if TYPE_CHECKING:
    from fedcore.config import RunConfig


@dataclass(frozen=True)
class Update:
    """What a worker sends back after a round of local training."""

    worker: int
    params: torch.Tensor
    num_samples: int
    steps: int
    lr: float


def weighted_average(updates: list[Update], weighted: bool = True) -> torch.Tensor:
    """Average of the workers' parameters, weighted by their sample counts (``weighted=False``: plain mean)."""
    total = sum(u.num_samples for u in updates) if weighted else len(updates)
    out = torch.zeros_like(updates[0].params)
    for u in updates:
        out.add_(u.params, alpha=(u.num_samples if weighted else 1) / total)
    return out


def average_delta(
    global_params: torch.Tensor, updates: list[Update], weighted: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The workers' average and its change from the global model (the server's pseudo-gradient)."""
    average = weighted_average(updates, weighted)
    return average, average - global_params


@dataclass(frozen=True)
class Proximal:
    """FedProx's gradient term ``mu * (w - anchor)``: a plain object, so it can be sent to a worker process."""

    mu: float
    anchor: torch.Tensor

    def __call__(self, grad: torch.Tensor, params: torch.Tensor) -> None:
        grad.add_(params, alpha=self.mu).sub_(self.anchor, alpha=self.mu)


@dataclass(frozen=True)
class Shift:
    """SCAFFOLD's gradient correction: a constant vector added to every local gradient."""

    shift: torch.Tensor

    def __call__(self, grad: torch.Tensor, params: torch.Tensor) -> None:
        grad.add_(self.shift)


def moved(average: torch.Tensor, delta: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``global + step``, computed from the average so that ``step == delta`` gives the average bit for bit."""
    return average + (step - delta)


class Strategy:
    """Base class: FedAvg's behaviour, hooks for the others."""

    name = "fedavg"

    def correction(self, worker: int, global_params: torch.Tensor) -> Correction | None:
        """Added to each local gradient of ``worker`` (None: plain SGD)."""
        return None

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        """The next global parameters."""
        raise NotImplementedError


class FedAvg(Strategy):
    """McMahan et al. 2017: the sample-weighted average of the workers' models."""

    name = "fedavg"

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        return weighted_average(updates)


@dataclass(eq=False)
class FedAvgM(Strategy):
    """Hsu et al. 2019, server momentum: v = momentum * v + delta; global += server_lr * v.

    ``server_momentum=0, server_lr=1`` is FedAvg exactly.
    """

    name = "fedavgm"
    server_lr: float
    server_momentum: float
    velocity: torch.Tensor | None = field(default=None, init=False, repr=False)

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        average, delta = average_delta(global_params, updates)
        v = delta if self.velocity is None else self.velocity * self.server_momentum + delta
        self.velocity = v
        return moved(average, delta, self.server_lr * v)


@dataclass(eq=False)
class FedProx(Strategy):
    """Li et al. 2020: workers minimise loss + mu/2 ||w - w_global||^2; aggregation as FedAvg.

    ``mu=0`` is FedAvg exactly.
    """

    name = "fedprox"
    mu: float

    def correction(self, worker: int, global_params: torch.Tensor) -> Correction:
        return Proximal(self.mu, global_params)  # + mu * (w - w_global)

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        return weighted_average(updates)


@dataclass(eq=False)
class FedAdam(Strategy):
    """Reddi et al. 2021 (FedOpt with Adam on the server), without bias correction as in the paper:

    m = beta1 m + (1 - beta1) delta;  v = beta2 v + (1 - beta2) delta^2;  global += server_lr m / (sqrt(v) + tau).
    """

    name = "fedadam"
    server_lr: float
    beta1: float
    beta2: float
    tau: float
    m: torch.Tensor | None = field(default=None, init=False, repr=False)
    v: torch.Tensor | None = field(default=None, init=False, repr=False)

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        average, delta = average_delta(global_params, updates)
        if self.m is None or self.v is None:
            self.m, self.v = torch.zeros_like(delta), torch.zeros_like(delta)
        self.m = self.m * self.beta1 + (1 - self.beta1) * delta
        self.v = self.v * self.beta2 + (1 - self.beta2) * delta.square()
        return moved(average, delta, self.server_lr * self.m / (self.v.sqrt() + self.tau))


@dataclass(eq=False)
class Scaffold(Strategy):
    """Karimireddy et al. 2020, option II: control variates correct each local gradient by c - c_i.

    After K local steps at rate lr from x to y_i: c_i <- c_i - c + (x - y_i) / (K lr). The server moves
    x by server_lr times the *plain* mean of y_i - x over the participants (the paper's rule; FedAvg's
    sample weighting is not used) and c by the sum of the c_i changes divided by N, the total number of
    ``workers`` (not the participants). The c_i formula
    assumes plain local SGD (no momentum or weight decay).
    """

    name = "scaffold"
    workers: int
    server_lr: float
    c: torch.Tensor | None = field(default=None, init=False, repr=False)
    c_worker: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def _variates(self, worker: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c, c_i), zeros until first set."""
        if self.c is None:
            self.c = torch.zeros_like(like)
        c_i = self.c_worker.get(worker)
        return self.c, torch.zeros_like(self.c) if c_i is None else c_i

    def correction(self, worker: int, global_params: torch.Tensor) -> Correction:
        c, c_i = self._variates(worker, global_params)
        return Shift(c - c_i)

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        change = torch.zeros_like(global_params)  # sum over participants of c_i_new - c_i
        for u in updates:
            c, c_i = self._variates(u.worker, global_params)
            new = (global_params - u.params).div_(u.steps * u.lr).add_(c_i).sub_(c)
            change += new - c_i
            self.c_worker[u.worker] = new
        self.c = self.c + change / self.workers
        average, delta = average_delta(global_params, updates, weighted=False)
        return moved(average, delta, self.server_lr * delta)


def strategy_for(config: RunConfig) -> Strategy:
    """A fresh strategy (with empty server state) for the one a run config asks for."""
    c = config
    builders = {
        "fedavg": FedAvg,
        "fedavgm": lambda: FedAvgM(c.server_lr, c.server_momentum),
        "fedprox": lambda: FedProx(c.mu),
        "fedadam": lambda: FedAdam(c.server_lr, c.beta1, c.beta2, c.tau),
        "scaffold": lambda: Scaffold(c.workers, c.server_lr),
    }
    return builders[c.strategy]()
