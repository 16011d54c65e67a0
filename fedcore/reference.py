"""A plain, obviously correct FedAvg: the textbook loop, kept as the engine's test oracle.

One worker after another, a deep copy of the global model, ``torch.optim.SGD``, autograd and a
state-dict average. It shares only the seeds, the allocation and the batch order with the engine.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fedcore.config import RunConfig
from fedcore.data import Dataset
from fedcore.engine import allocate
from fedcore.local import generator
from fedcore.models import build
from fedcore.training import batch_stream, steps_for


def run_reference(config: RunConfig, data: Dataset) -> list[torch.Tensor]:
    """FedAvg with every worker taking part; the global parameters (flattened) after each round."""
    torch.manual_seed(config.seed)
    global_model = build(config.model, data.num_classes)
    _, worker_idx = allocate(config, data.train_y)
    history = []
    for rnd in range(1, config.rounds + 1):
        lr = config.lr * config.lr_decay ** (rnd - 1)
        states, sizes = [], []
        for k, idx in enumerate(worker_idx):
            x, y = data.train_x[idx], data.train_y[idx]
            model = copy.deepcopy(global_model)
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
            batches = batch_stream(x, y, config.batch_size, generator(config.seed, rnd, k))
            for _ in range(steps_for(len(y), config.batch_size, config.local_epochs, config.local_steps)):
                xb, yb = next(batches)
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            states.append(model.state_dict())
            sizes.append(len(y))
        total = sum(sizes)
        average = {name: sum(s[name] * (n / total) for s, n in zip(states, sizes, strict=True)) for name in states[0]}
        global_model.load_state_dict(average)
        history.append(nn.utils.parameters_to_vector(global_model.parameters()).detach().clone())
    return history
