"""The Flower side of benchmarks/vs_flower.py: a ServerApp and a ClientApp as Flower's PyTorch quickstart
writes them (an ordinary torch loop on each client, FedAvg weighted by examples, a server-side evaluation),
on fedcore's split, model, initial weights and batch order, run in Flower's simulation engine (Ray).

A module of its own, not part of the script: Ray's actors import it by name, as they import a Flower
project's client module, so each actor keeps MNIST and the split in memory from round to round (a function
of the script itself would be pickled anew with every message, its caches with it).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import time

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from torch.utils.data import DataLoader, RandomSampler, Subset, TensorDataset

from fedcore.config import RunConfig
from fedcore.data import load
from fedcore.engine import allocate, configure_torch, generator
from fedcore.models import build

client_app = ClientApp()


@functools.cache
def partition(run_config: str) -> list[list[int]]:
    """Each worker's training indices under fedcore's allocation of this (JSON) RunConfig."""
    config = RunConfig(**json.loads(run_config))
    _, indices = allocate(config, load(config.dataset, config.data_dir).train_y)
    return [i.tolist() for i in indices]


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Local epochs of plain SGD from the global model; the reply weighs by the shard's size."""
    configure_torch(1)
    settings = msg.content["config"]
    config = RunConfig(**json.loads(settings["run-config"]))
    worker = int(context.node_config["partition-id"])
    mnist = load(config.dataset, config.data_dir)  # cached in the actor, as Flower's examples cache theirs
    data = Subset(TensorDataset(mnist.train_x, mnist.train_y), partition(settings["run-config"])[worker])
    model = build(config.model)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    # fedcore's shuffling stream for (seed, round, worker): both frameworks draw the same batches
    order = RandomSampler(data, generator=generator(config.seed, int(settings["server-round"]), worker))
    for _ in range(config.local_epochs):
        for x, y in DataLoader(data, batch_size=config.batch_size, sampler=order):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    reply = {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord({"num-examples": len(data)})}
    return Message(content=RecordDict(reply), reply_to=msg)


def simulate(config: RunConfig, actors: int) -> tuple[list[float], float]:
    """Train ``config`` in Flower's simulation, ``actors`` Ray actors of one CPU each. Returns the seconds
    of each round, the first from the start of the simulation (Ray and its actors included), each up to
    the end of its server-side evaluation; and the final test accuracy."""
    configure_torch(1)
    data = load(config.dataset, config.data_dir)
    torch.manual_seed(config.seed)
    model = build(config.model)  # fedcore's initial model: the same seed before the same construction
    initial = ArrayRecord(model.state_dict())
    ends: list[float] = []
    accuracy: list[float] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        with torch.no_grad():
            accuracy.append((model(data.test_x).argmax(1) == data.test_y).float().mean().item())
        ends.append(time.perf_counter())
        return MetricRecord({"accuracy": accuracy[-1]})

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        configure_torch(1)  # the server runs in a thread of this process
        strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=config.workers, min_available_nodes=config.workers)
        run_config = ConfigRecord({"run-config": json.dumps(dataclasses.asdict(config))})
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=config.rounds, train_config=run_config,
                       evaluate_fn=evaluate)

    start = time.perf_counter()
    run_simulation(server_app, client_app, num_supernodes=config.workers, backend_config={
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": actors}})
    marks = [start, *ends[1:]]  # ends[0]: the evaluation of the initial model, before round 1
    return [b - a for a, b in itertools.pairwise(marks)], accuracy[-1]
