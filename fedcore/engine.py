"""The federated engine (FedAvg and its strategies) and the non-federated baseline.

Read top to bottom: set-up (with ``validation``, the held-out training images are set apart and scored every
round as val_loss and val_accuracy), then for each round every chosen worker trains from the global model
with fresh optimizer state, the strategy aggregates, and the global model is evaluated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from fedcore import data as datasets
from fedcore import parallel
from fedcore.allocation import Allocation, partitioner_for
from fedcore.config import ConfigError, RunConfig
from fedcore.local import Shard, configure_torch, generator
from fedcore.losses import LocalLoss
from fedcore.metrics import Evaluation, evaluate, update_geometry
from fedcore.models import build
from fedcore.results import RunResult
from fedcore.strategies import Update, strategy_for
from fedcore.training import SGD, FlatModel, Stack, batch_stream, steps_for


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; ``result`` holds the rounds before it, marked ``diverged``."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device must be auto or cpu here: CUDA is not available; got {name!r}", param="device")
    return torch.device(name)


def allocate(config: RunConfig, labels: torch.Tensor) -> tuple[Allocation, list[torch.Tensor]]:
    """The allocation and each worker's training indices, with the globally shared subset added to every worker."""
    shared = torch.empty(0, dtype=torch.long)
    pool = torch.arange(len(labels))
    if config.shared_fraction > 0:
        perm = torch.randperm(len(labels), generator=generator(config.seed, 1))
        n_shared = round(config.shared_fraction * len(labels))
        shared, pool = perm[:n_shared], perm[n_shared:].sort().values
    alloc = partitioner_for(config).split(labels[pool], config.workers, config.seed)
    return alloc, [torch.cat([pool[i], shared]) for i in alloc.indices]


def _setup(config: RunConfig, data: datasets.Dataset | None) -> tuple[datasets.Dataset, Shard | None, FlatModel]:
    """The data on the device (less the held-out validation images, returned apart) and the initial model."""
    configure_torch(config.threads)
    device = resolve_device(config.device)
    data = (data or datasets.load(config.dataset, config.data_dir)).to(device)
    validation = None
    if config.validation:
        data, validation = datasets.holdout(data, config.validation)
    torch.manual_seed(config.seed)
    return data, validation, FlatModel(build(config.model, data.num_classes).to(device), data.num_classes)


def _record(
    result: RunResult, model: FlatModel, data: datasets.Dataset, validation: Shard | None, rnd: int, lr: float,
    samples: int, seconds: float,
) -> Evaluation:
    """Evaluate the global model (on the validation images too, if any), append its rows and return its test
    evaluation (stopping on NaN/inf)."""
    ev = evaluate(model.module, data.test_x, data.test_y, data.num_classes, model.eval_chunk)
    if not math.isfinite(ev.loss):
        result.diverged = f"test loss became {ev.loss} at round {rnd} (lr {lr:g}); lower lr or the local work"
        raise TrainingDiverged(result.diverged, result)
    held: dict[str, object] = {}
    if validation is not None:
        val = evaluate(model.module, *validation, data.num_classes, model.eval_chunk)
        held = {"val_loss": val.loss, "val_accuracy": val.accuracy}
    result.rounds.append({"round": rnd, "test_loss": ev.loss, "test_accuracy": ev.accuracy, **held, "lr": lr,
                          "samples": samples, "seconds": seconds, "predicted": ev.predicted,
                          "output_bias": model.params[model.output_bias_slice].tolist()})
    result.classes.extend({"round": rnd, "digit": d, "accuracy": a} for d, a in enumerate(ev.class_accuracy))
    return ev


def _progress(config: RunConfig, kind: str, progress: bool) -> tqdm:
    label = f"{kind} {config.model} {config.allocation}"
    if config.allocation == "biased":
        label += f" {config.bias:g}"
    return tqdm(range(1, config.rounds + 1), desc=label, unit="round", disable=not progress, leave=False)


def _finish(result: RunResult, last: Evaluation) -> RunResult:
    """The run with the confusion matrix of its last evaluation, the final global model's."""
    result.confusion = last.confusion
    return result


Probe = Callable[[int, torch.Tensor, list[Update]], None]


def run_federated(
    config: RunConfig, progress: bool = True, data: datasets.Dataset | None = None, probe: Probe | None = None,
    lockstep: bool = True,
) -> RunResult:
    """Train with federated averaging (or the configured strategy) and record every round.

    ``data`` replaces the configured dataset (tests use small synthetic sets); ``probe`` is called
    after each round with the round, the new global parameters and the workers' updates; ``lockstep=False``
    trains each round's workers one after another (fedcore.local's test oracle).
    """
    data, validation, model = _setup(config, data)
    alloc, worker_idx = allocate(config, data.train_y.cpu())
    device = data.train_x.device
    shards = [i.to(device) for i in worker_idx]
    strategy = strategy_for(config, model.head)
    choose = generator(config.seed, 2)
    result = RunResult("federated", config.key("federated"), {**config.experiment(), "device": str(device)},
                       allocation=alloc.counts.tolist())
    global_params = model.params.clone()
    samples = 0
    _record(result, model, data, validation, 0, config.lr, 0, 0.0)
    test = (data.test_x[: config.eval_workers], data.test_y[: config.eval_workers])
    train_round = parallel.local_training(config, device, model, (data.train_x, data.train_y), shards, test, lockstep)
    bar = _progress(config, "federated", progress)
    for rnd in bar:
        start = time.perf_counter()
        lr = config.lr * config.lr_decay ** (rnd - 1)
        chosen = sorted(torch.randperm(config.workers, generator=choose)[: config.per_round].tolist())
        trained = train_round(rnd, lr, global_params, [(k, strategy.correction(k, global_params)) for k in chosen])
        updates = [t.update for t in trained]
        samples += sum(t.seen for t in trained)
        geometry = update_geometry(global_params, [u.params for u in updates], model.output_slice,
                                   model.output_bias_slice)
        for t, moves in zip(trained, geometry, strict=True):
            u = t.update
            result.workers.append({"round": rnd, "worker": u.worker, "num_samples": u.num_samples, **moves, **t.score})
        global_params = strategy.aggregate(global_params, updates)
        if probe is not None:
            probe(rnd, global_params, updates)
        model.load(global_params)
        last = _record(result, model, data, validation, rnd, lr, samples, time.perf_counter() - start)
        bar.set_postfix(loss=f"{last.loss:.3f}", acc=f"{result.final_accuracy:.3f}")
    return _finish(result, last)


def centralized_steps(config: RunConfig, n: int, rnd: int) -> int:
    """Steps of the baseline in round ``rnd``: as many samples as all chosen workers see in a round.

    With one local epoch and every worker taking part, that is one epoch of the pooled data.
    """
    if config.batch_size is None:  # full batch: one step on the union per local step of the workers
        return steps_for(n, None, config.local_epochs, config.local_steps)
    share = config.per_round / config.workers
    if config.local_epochs is not None:
        per_round = share * config.local_epochs * n
    else:
        per_round = share * config.workers * config.local_steps * config.batch_size
    return math.ceil(rnd * per_round / config.batch_size) - math.ceil((rnd - 1) * per_round / config.batch_size)


def run_centralized(
    config: RunConfig, progress: bool = True, data: datasets.Dataset | None = None, probe: Probe | None = None
) -> RunResult:
    """The non-federated baseline: same model, initialisation and optimizer on all the data in one place.

    ``probe`` is called after each round with the round, the parameters and an empty list of updates.
    """
    data, validation, model = _setup(config, data)
    x, y = data.train_x, data.train_y
    stack = Stack(model, model.params[None])  # a stack of one: the model itself
    optimizer = SGD(config.lr, config.momentum, config.weight_decay)
    batches = batch_stream(x, y, config.batch_size, generator(config.seed, 3))
    result = RunResult("centralized", config.key("centralized"),
                       {**config.experiment("centralized"), "device": str(x.device)})
    _record(result, model, data, validation, 0, config.lr, 0, 0.0)
    samples = 0
    bar = _progress(config, "centralized", progress)
    for rnd in bar:
        start = time.perf_counter()
        optimizer.lr = config.lr * config.lr_decay ** (rnd - 1)
        for _ in range(centralized_steps(config, len(y), rnd)):
            xb, yb = next(batches)
            stack.gradient(1, xb[None], yb[None], torch.ones(1, len(yb), device=x.device), LocalLoss())
            optimizer.step(stack.params, stack.grad)
            samples += len(yb)
        if probe is not None:
            probe(rnd, model.params, [])
        last = _record(result, model, data, validation, rnd, optimizer.lr, samples, time.perf_counter() - start)
        bar.set_postfix(loss=f"{last.loss:.3f}", acc=f"{result.final_accuracy:.3f}")
    return _finish(result, last)


def run_divergence(config: RunConfig, progress: bool = True, data: datasets.Dataset | None = None) -> RunResult:
    """Weight divergence (Zhao et al. 2018): per round, ||w_federated - w_centralized|| / ||w_centralized||
    for the two models trained from the same initial weights on the same number of images."""
    centralized: list[torch.Tensor] = []
    cen = run_centralized(config, progress, data, probe=lambda rnd, params, _: centralized.append(params.clone()))
    distance: list[float] = []

    def measure(rnd: int, params: torch.Tensor, _: list[Update]) -> None:
        reference = centralized[rnd - 1]
        distance.append(((params - reference).norm() / reference.norm()).item())

    fed = run_federated(config, progress, data, probe=measure)
    rounds = [{"round": f["round"], "divergence": d, "federated_accuracy": f["test_accuracy"],
               "centralized_accuracy": c["test_accuracy"]}
              for f, c, d in zip(fed.rounds, cen.rounds, [0.0, *distance], strict=True)]
    return RunResult("divergence", config.key("divergence"), fed.config, rounds=rounds)
