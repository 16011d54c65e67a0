"""Aggregation strategies: how the manager turns the workers' models into the next global model.

One small class per rule, all on flat parameter vectors. A strategy may also correct the workers'
local gradients (FedProx, SCAFFOLD) through ``correction``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedcore.training import Correction


@dataclass(frozen=True)
class Update:
    """What a worker sends back after a round of local training."""

    worker: int
    params: torch.Tensor
    num_samples: int
    steps: int
    lr: float


def weighted_average(updates: list[Update]) -> torch.Tensor:
    """Average of the workers' parameters, weighted by their sample counts."""
    total = sum(u.num_samples for u in updates)
    out = torch.zeros_like(updates[0].params)
    for u in updates:
        out.add_(u.params, alpha=u.num_samples / total)
    return out


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


def strategy_for(config: object) -> Strategy:
    """The strategy a run config asks for."""
    return {"fedavg": FedAvg}[config.strategy]()
