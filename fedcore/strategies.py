"""Aggregation strategies: how the manager turns the workers' models into the next global model.

One small class per rule, all on flat parameter vectors. A strategy may also change the workers' local
training: correct their gradients (FedProx, SCAFFOLD: ``correction``), their loss from their own class counts
(FedRS, FedLC, FedNTD: ``local_loss``), or keep the output layer fixed (FedBABU: ``trains_head``). Strategies
with server state (momentum, moments, control variates) keep it on the instance (``state``): ``strategy_for``
builds a fresh one per run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from fedcore.losses import LocalLoss

if TYPE_CHECKING:
    from fedcore.config import RunConfig
    from fedcore.training import Head


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


class Correction:
    """Added to a worker's local gradients at every step: ``correction(grad, params)`` changes ``grad`` in place
    (rows of workers, or one flat vector). A plain object, so that it can be sent to a worker process."""

    def __call__(self, grad: torch.Tensor, params: torch.Tensor) -> None:
        raise NotImplementedError

    @classmethod
    def stacked(cls, corrections: list[Correction]) -> Correction:
        """One correction for a stack of workers, row k being ``corrections[k]``'s."""
        raise NotImplementedError

    def rows(self, workers: int) -> Correction:
        """The correction of the first ``workers`` rows of a stack."""
        return self


@dataclass(frozen=True)
class Proximal(Correction):
    """FedProx's gradient term ``mu * (w - anchor)``, the anchor being the global model (shared by every row)."""

    mu: float
    anchor: torch.Tensor

    def __call__(self, grad: torch.Tensor, params: torch.Tensor) -> None:
        grad.add_(params, alpha=self.mu).sub_(self.anchor, alpha=self.mu)

    @classmethod
    def stacked(cls, corrections: list[Proximal]) -> Proximal:
        first = corrections[0]
        if any(c.mu != first.mu or not torch.equal(c.anchor, first.anchor) for c in corrections[1:]):
            raise ValueError("the workers of a round share FedProx's mu and anchor")
        return first


@dataclass(frozen=True)
class Shift(Correction):
    """SCAFFOLD's gradient correction: a constant vector added to every local gradient (a row per worker)."""

    shift: torch.Tensor

    def __call__(self, grad: torch.Tensor, params: torch.Tensor) -> None:
        grad.add_(self.shift)

    @classmethod
    def stacked(cls, corrections: list[Shift]) -> Shift:
        return cls(torch.stack([c.shift for c in corrections]))

    def rows(self, workers: int) -> Shift:
        return Shift(self.shift[:workers])


def moved(average: torch.Tensor, delta: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``global + step``, computed from the average so that ``step == delta`` gives the average bit for bit."""
    return average + (step - delta)


@dataclass(eq=False)
class Strategy:
    """Base class: FedAvg's behaviour, hooks for the others."""

    name = "fedavg"
    trains_head = True  # False: the workers leave the output layer as the global model has it

    def correction(self, worker: int, global_params: torch.Tensor) -> Correction | None:
        """Added to each local gradient of ``worker`` (None: plain SGD)."""
        return None

    def local_loss(self, counts: torch.Tensor) -> LocalLoss:
        """The local objective of workers whose class counts are the rows of ``counts`` (plain cross-entropy)."""
        return LocalLoss()

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        """The next global parameters."""
        raise NotImplementedError


@dataclass(eq=False)
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


@dataclass(eq=False)
class FedRS(Strategy):
    """Li and Zhan 2021, restricted softmax: each worker scales its logit of class c by
    ``alpha + (1 - alpha) * n_c / max(n)`` from its own class counts (the form of the authors' code, FedRepo;
    one class per worker: 1 for its class, ``alpha`` for every absent one), so that absent classes are pushed
    down less. The authors' classifier has no bias; here the scale multiplies the 2NN's whole logit, its output
    bias included. Aggregation as FedAvg; ``alpha=1`` is FedAvg exactly."""

    name = "fedrs"
    alpha: float

    def local_loss(self, counts: torch.Tensor) -> LocalLoss:
        share = counts / counts.max(1, keepdim=True).values
        return LocalLoss(scale=share * (1 - self.alpha) + self.alpha)

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        return weighted_average(updates)


@dataclass(eq=False)
class FedRSCentered(FedRS):
    """Ours, a diagnostic, not a published method: FedRS with the common part of each sample's logit gradient
    (its mean over the classes) removed. With plain cross-entropy that part is zero; under the restricted softmax
    a worker missing classes gets one, -(1 - alpha) times its missed probability over the classes, which raises
    every logit together, and averaging adds the pushes round after round. Removing only it shows whether that
    drift is what costs FedRS accuracy."""

    name = "fedrs-centered"

    def local_loss(self, counts: torch.Tensor) -> LocalLoss:
        return dataclasses.replace(super().local_loss(counts), centered=True)


@dataclass(eq=False)
class FedLC(Strategy):
    """A variant of Zhang et al. 2022's logit calibration (FedLC), ours: each worker subtracts ``tau * n_c^(-1/4)``
    from its logit of class c (its own count n_c) before the cross-entropy, and a class the worker does not hold
    counts as one sample. The paper's n_c^(-1/4) is infinite there (reference implementations give an absent
    class count 0), and at one class per worker an infinite shift would make every local loss zero. So ``tau``
    here sets a margin between a held class (about 5,400 images: shift 0.12 tau) and an absent one (shift tau) of
    about 0.88 tau, not the paper's calibration. Aggregation as FedAvg; ``tau=0`` is FedAvg exactly."""

    name = "fedlc"
    tau: float

    def local_loss(self, counts: torch.Tensor) -> LocalLoss:
        return LocalLoss(shift=counts.clamp(min=1).pow(-0.25) * -self.tau)

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        return weighted_average(updates)


@dataclass(eq=False)
class FedNTD(Strategy):
    """Lee et al. 2022, not-true distillation: each worker adds ``beta`` times the distillation of the global
    model's softmax over the classes other than the label, at ``temperature``, so that it keeps the global
    model's view of the classes it does not see. Aggregation as FedAvg; ``beta=0`` is FedAvg exactly."""

    name = "fedntd"
    beta: float
    temperature: float

    def local_loss(self, counts: torch.Tensor) -> LocalLoss:
        return LocalLoss(distill=self.beta, temperature=self.temperature)

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        return weighted_average(updates)


def spread_out(weight: torch.Tensor, margin: float, steps: int, lr: float) -> torch.Tensor:
    """FedAwS's repair of the classifier on the manager: ``steps`` steps of SGD (momentum 0.9) at ``lr`` on the
    spreadout penalty of the class rows of ``weight`` (classes x features), the squared hinge of the cosine
    distance d = (1 - cos) / 2 of every pair of classes below ``margin``, summed and divided by classes^2 as the
    FedRS authors' code (FedRepo) computes it."""
    classes = len(weight)
    apart = 1 - torch.eye(classes, dtype=weight.dtype, device=weight.device)
    w = weight.detach().clone().requires_grad_(True)
    optimizer = torch.optim.SGD([w], lr=lr, momentum=0.9)
    with torch.enable_grad():
        for _ in range(steps):
            unit = torch.nn.functional.normalize(w, dim=1)
            distance = (1 - unit @ unit.T) / 2
            penalty = ((margin - distance).clamp(min=0).square() * apart).sum() / classes**2
            optimizer.zero_grad()
            penalty.backward()
            optimizer.step()
    return w.detach()


@dataclass(eq=False)
class FedAwS(Strategy):
    """FedRepo's variant of Yu et al. 2020's federated averaging with spreadout: the workers train as in FedAvg
    (softmax over every class), and after the average the manager pushes the output layer's class rows apart
    (``spread_out``: ``margin``, ``steps``, ``lr``). Yu et al. train from positive labels only (a worker's loss
    sees its own class alone), which is not built here. At FedRepo's margin 0.8 the penalty never reaches zero:
    the mean pairwise cosine of ten rows is at least -1/9, so their mean cosine distance is at most 5/9 < 0.8,
    and ``lr`` acts as the strength of a push that never stops. ``steps=0`` is FedAvg exactly."""

    name = "fedaws"
    head: Head
    margin: float
    steps: int
    lr: float

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        average = weighted_average(updates)
        if self.steps:
            h = self.head
            rows = spread_out(average[h.weight].view(h.classes, h.features), self.margin, self.steps, self.lr)
            average[h.weight] = rows.flatten()
        return average


@dataclass(eq=False)
class FedBABU(Strategy):
    """Oh et al. 2022's body-only training: the output layer stays at its initial weights and only the body is
    trained and averaged; the global model is evaluated as it is (without FedBABU's per-worker fine-tuning)."""

    name = "fedbabu"
    trains_head = False
    head: Head

    def aggregate(self, global_params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        average = weighted_average(updates)
        average[self.head.start :] = global_params[self.head.start :]  # exactly, not an average of equal copies
        return average


def strategy_for(config: RunConfig, head: Head | None = None) -> Strategy:
    """A fresh strategy (with empty server state) for the one a run config asks for; those that act on the
    output layer (FedAwS, FedBABU) need the model's ``head`` (FlatModel.head)."""
    c = config
    if c.strategy in ("fedaws", "fedbabu") and head is None:
        raise ValueError(f"strategy {c.strategy} needs the model's head (FlatModel.head)")
    builders = {
        "fedavg": FedAvg,
        "fedavgm": lambda: FedAvgM(c.server_lr, c.server_momentum),
        "fedprox": lambda: FedProx(c.mu),
        "fedadam": lambda: FedAdam(c.server_lr, c.beta1, c.beta2, c.tau),
        "scaffold": lambda: Scaffold(c.workers, c.server_lr),
        "fedrs": lambda: FedRS(c.rs_alpha),
        "fedrs-centered": lambda: FedRSCentered(c.rs_alpha),
        "fedlc": lambda: FedLC(c.lc_tau),
        "fedntd": lambda: FedNTD(c.ntd_beta, c.ntd_temperature),
        "fedaws": lambda: FedAwS(head, c.aws_margin, c.aws_steps, c.aws_lr),
        "fedbabu": lambda: FedBABU(head),
    }
    return builders[c.strategy]()
