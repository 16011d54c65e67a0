"""The workers' local training in a round, one floor below the engine and its worker processes.

The chosen workers advance in lock-step: one ``Stack`` of their models, one batched operation per layer for all
of them, each worker with its own batch stream (``generator(seed, round, worker)``), its own momentum buffer,
gradient correction (FedProx, SCAFFOLD) and local loss (FedRS, FedLC, FedNTD), the output layer left alone
where the strategy keeps it fixed (FedBABU). A round's batches are planned up front: ``[steps, workers, batch]``
indices into the training set, a short batch padded and its padding masked out of the loss. Workers with
fewer steps finish first: ordered by steps, the workers still training are always the first rows of the stack.
The stacks hold ``GROUPS[model]`` workers each (those with the most steps together), the fastest measured on one
CPU thread, with the same bits (benchmarks/lockstep_groups.py): for the 2NN stacks of two (a worker-step 22-30%
faster than in one stack of all ten), for softmax regression one stack of all ten (about 30% faster than stacks
of two: its steps are so small that a step's fixed costs dominate).
``lockstep=False`` trains the same workers one at a time (stacks of one), the per-worker loop the tests hold
the lock-step path against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from fedcore.config import RunConfig
from fedcore.metrics import evaluate
from fedcore.strategies import Correction, Update, strategy_for
from fedcore.training import SGD, FlatModel, Stack, batch_positions, steps_for

Shard = tuple[torch.Tensor, torch.Tensor]  # (inputs, labels)
Task = tuple[int, Correction | None]  # (worker, its gradient correction)
GROUPS = {"mlp": 2, "logistic": 10, "cnn": 2}  # workers per lock-step stack; the results do not depend on it


def configure_torch(threads: int) -> None:
    """Set torch's thread count explicitly (unset, steps can run 50x slower when another process is busy;
    it is part of the run key, as it changes the last bits) and flush denormal floats to zero (a converged
    model's tiny gradients are otherwise several times slower to multiply on x86)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def generator(*seed: int) -> torch.Generator:
    """A CPU generator seeded from a tuple, e.g. (seed, round, worker): independent, reproducible streams."""
    state = np.random.SeedSequence(list(seed)).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


@dataclass(frozen=True)
class Trained:
    """One worker's round of local training: its update, the samples it saw and, with ``eval_workers``,
    its local model's test figures."""

    update: Update
    seen: int
    score: dict[str, object]


@dataclass(frozen=True)
class Plan:
    """A round's batches for a stack of workers: ``index`` [steps, workers, batch] rows of the training set,
    ``valid`` (1 for a real row, 0 for padding) and ``active[t]``, the workers (the first rows) still training
    at step t."""

    index: torch.Tensor
    valid: torch.Tensor
    active: list[int]


def plan(shards: list[torch.Tensor], steps: list[int], batch_size: int | None, generators: list[torch.Generator]
         ) -> Plan:
    """The batches of workers holding the training rows ``shards[k]``, ``steps[k]`` each (most first), drawn as
    ``training.batch_positions`` draws them; a batch shorter than the longest is padded with the worker's first
    row, masked out."""
    width = max(len(s) if batch_size is None else min(batch_size, len(s)) for s in shards)
    index = torch.zeros(steps[0], len(shards), width, dtype=torch.long)
    valid = torch.zeros(steps[0], len(shards), width)
    for k, (rows, n_steps, g) in enumerate(zip(shards, steps, generators, strict=True)):
        stream = batch_positions(len(rows), batch_size, g)
        batches = [next(stream) for _ in range(n_steps)]
        lengths = torch.tensor([len(b) for b in batches])
        positions = pad_sequence(batches, batch_first=True)  # padded with position 0
        index[:, k] = rows[0]  # padding: the worker's first row, masked out
        index[:n_steps, k, : positions.shape[1]] = rows[positions]
        valid[:n_steps, k] = (torch.arange(width) < lengths[:, None]).float()
    active = [sum(n > t for n in steps) for t in range(steps[0])]
    return Plan(index, valid, active)


def gather(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``tensor[rows]`` (rows of any shape), by ``index_select``: about three times as fast on CPU."""
    return tensor.index_select(0, rows.flatten()).view(*rows.shape, *tensor.shape[1:])


def train_workers(
    model: FlatModel, train: Shard, shards: list[torch.Tensor], test: Shard, config: RunConfig, rnd: int, lr: float,
    global_params: torch.Tensor, tasks: list[Task], lockstep: bool = True,
) -> list[Trained]:
    """The chosen workers' local training in round ``rnd`` from the global parameters, with fresh optimizer
    state: in lock-step stacks of ``GROUPS[config.model]`` workers, or (``lockstep=False``) one after another;
    results in task order. ``train`` is the run's training set and ``shards[k]`` worker k's rows of it."""
    n = {k: len(shards[k]) for k, _ in tasks}
    steps = {k: steps_for(n[k], config.batch_size, config.local_epochs, config.local_steps) for k in n}
    size = GROUPS[config.model] if lockstep else 1
    if len(tasks) > size:
        ranked = sorted(range(len(tasks)), key=lambda i: -steps[tasks[i][0]])  # most steps first (stable)
        done: list[Trained | None] = [None] * len(tasks)
        for g in range(0, len(ranked), size):
            group = ranked[g : g + size]
            trained = train_workers(model, train, shards, test, config, rnd, lr, global_params,
                                    [tasks[i] for i in group])
            for i, t in zip(group, trained, strict=True):
                done[i] = t
        return done
    x, y = train
    device = x.device
    order = sorted(range(len(tasks)), key=lambda i: -steps[tasks[i][0]])  # most steps first (stable)
    workers = [tasks[i][0] for i in order]
    corrections = [tasks[i][1] for i in order]
    rounds = plan([shards[k].cpu() for k in workers], [steps[k] for k in workers], config.batch_size,
                  [generator(config.seed, rnd, k) for k in workers])
    index, valid = rounds.index.to(device), rounds.valid.to(device)

    rule = strategy_for(config, model.head)
    counts = torch.stack([torch.bincount(y[shards[k]], minlength=model.num_classes) for k in workers]).to(x.dtype)
    loss = rule.local_loss(counts)
    correction = None if corrections[0] is None else type(corrections[0]).stacked(corrections)
    teacher = Stack(model, global_params[None]) if loss.distill else None
    stack = Stack(model, global_params.expand(len(workers), -1).clone())
    trainable = slice(None) if rule.trains_head else slice(0, model.head.start)
    optimizer = SGD(lr, config.momentum, config.weight_decay)
    for t, a in enumerate(rounds.active):
        if t == 0 or a != rounds.active[t - 1]:  # the views of the workers still training, made when they change
            loss_a, correct = loss.rows(0, a), None if correction is None else correction.rows(a)
            params, grad = stack.params[:a], stack.grad[:a]
            params_trained, grad_trained = params[:, trainable], grad[:, trainable]
        rows = index[t, :a]
        xb, yb = gather(x, rows), gather(y, rows)
        stack.gradient(a, xb, yb, valid[t, :a], loss_a, None if teacher is None else teacher.logits(xb))
        if correct is not None:
            correct(grad, params)
        optimizer.step(params_trained, grad_trained)

    out: list[Trained | None] = [None] * len(tasks)
    seen = rounds.valid.sum((0, 2))
    for row, (i, k) in enumerate(zip(order, workers, strict=True)):
        score: dict[str, object] = {}
        if config.eval_workers:
            model.load(stack.params[row])
            ev = evaluate(model.module, *test, model.num_classes, model.eval_chunk)
            score = {"test_accuracy": ev.accuracy, "test_loss": ev.loss, "predicted": ev.predicted}
        out[i] = Trained(Update(k, stack.params[row].clone(), n[k], steps[k], lr), int(seen[row]), score)
    return out
