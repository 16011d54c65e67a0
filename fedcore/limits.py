"""What a run asks of the machine, estimated from its configuration before any work: memory and open files.

A run beyond them would otherwise fail part-way: out of memory (``--local-steps 100000000`` plans a round of
256 GB of batch indices) or with 'Too many open files' (each worker's shard is shared with the worker processes
through a file descriptor). ``check`` refuses it first, with a ConfigError naming the parameter and its range.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch

from fedcore.config import ConfigError, RunConfig
from fedcore.models import build
from fedcore.parallel import worker_processes
from fedcore.training import FlatModel, steps_for

FLOAT, INDEX = 4, 8  # bytes of a float32 and of an int64
IMAGE = (1, 28, 28)  # both datasets' images
FILE_RESERVE = 32  # descriptors a process holds besides the shared tensors: libraries, pipes, standard streams
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory.max")  # a container's limit (cgroup v2), where there is one


@dataclass(frozen=True)
class Memory:
    """Bytes a run needs, about: ``total`` of one process at its peak, ``largest`` its largest tensor, and
    ``plan_per_step``, what one more local step adds to a round's batch plan."""

    total: int
    largest: int
    plan_per_step: int


def layer_sizes(model: str) -> list[int]:
    """Floats each layer of ``model`` outputs for one image, in order."""
    module, x, sizes = build(model), torch.zeros(1, *IMAGE), []
    with torch.no_grad():
        for layer in module:
            x = layer(x)
            sizes.append(x.numel())
    return sizes


def memory_needed(config: RunConfig, kind: str, largest_shard: int, train_images: int, test_images: int) -> Memory:
    """The memory of a run whose largest worker holds ``largest_shard`` of the ``train_images``. It counts what grows
    with the configuration, in one process (worker processes share the work out, not the sum): a round's batch
    plan (fedcore.local.plan: an int64 row index and a float32 mask, [steps, workers, batch], the steps and
    batch those of the largest worker, the whole shard at full batch, and the positions of one worker's batches
    as they are drawn); one step's gathered images and the
    activations kept for the backward pass (of all the round's workers for the fused models, of one at a time
    for the CNN); the stacked parameters, their gradients, momentum buffers and updates; SCAFFOLD's control
    variate of every worker; the weight-divergence run's parameters of every round; scoring a chunk of test
    images (two layers' outputs at once) and the logits of all; and the dataset. Centralized runs have one worker
    and no plan."""
    sizes = layer_sizes(config.model)
    model = FlatModel(build(config.model))
    params, chunk = len(model.params), model.eval_chunk
    pixels = IMAGE[0] * IMAGE[1] * IMAGE[2]
    federated = kind != "centralized"
    shard = largest_shard if federated else train_images
    batch = shard if config.batch_size is None else min(config.batch_size, shard)
    workers = config.per_round if federated else 1
    steps = steps_for(shard, config.batch_size, config.local_epochs, config.local_steps) if federated else 0
    plan_per_step = workers * batch * (INDEX + FLOAT) + 3 * batch * INDEX  # and one worker's batches, drawn
    kept = workers if config.model != "cnn" else 1  # the CNN is differentiated one worker at a time
    parts = {
        "plan": steps * plan_per_step,
        "batch": workers * batch * pixels * FLOAT + kept * batch * 2 * sum(sizes) * FLOAT,
        "stack": workers * params * 4 * FLOAT,
        "variates": config.workers * params * FLOAT if config.strategy == "scaffold" and federated else 0,
        "divergence": config.rounds * params * FLOAT if kind == "divergence" else 0,
        "scoring": (min(chunk, test_images) * max(a + b for a, b in pairwise(sizes)) + test_images * sizes[-1])
        * FLOAT,
        "data": (train_images + test_images) * (pixels * FLOAT + INDEX),
    }
    largest = max(steps * workers * batch * INDEX, workers * batch * pixels * FLOAT, workers * params * FLOAT,
                  parts["data"])
    return Memory(sum(parts.values()), largest, plan_per_step)


def machine_memory(device: torch.device) -> int:
    """Bytes of memory a run may use here: the physical memory, or a container's limit where lower; on CUDA, the
    GPU's memory where lower still (the round's plan and batches live there)."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    try:
        limits.append(int(CGROUP_MEMORY.read_text()))
    except (OSError, ValueError):  # no cgroup v2 limit ('max', or no such file)
        pass
    if device.type == "cuda":
        limits.append(torch.cuda.get_device_properties(device).total_memory)
    return min(limits)


def open_files_needed(config: RunConfig, processes: int) -> int:
    """File descriptors a run needs with ``processes`` worker processes: none of its own with one process; else
    one per shared tensor (each worker's shard, the dataset's four) in every process, and in the main process
    once more per worker process while it hands them over."""
    if processes <= 1:
        return 0
    return (processes + 1) * (config.workers + 4) + FILE_RESERVE


def check(config: RunConfig, kind: str, device: torch.device, largest_shard: int, train_images: int,
          test_images: int) -> None:
    """Refuse, before any work, a run that needs more open files or memory than this machine gives it: a
    ConfigError naming the parameter and the range that fits."""
    processes = worker_processes(config, device) if kind != "centralized" else 1
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if files != resource.RLIM_INFINITY and open_files_needed(config, processes) > files:
        most = (files - FILE_RESERVE) // (processes + 1) - 4
        raise ConfigError(
            f"workers must be at most {most} with {processes} worker processes under this shell's open-file limit "
            f"of {files} (ulimit -n): each worker's data is shared with every process through a file; use "
            f"--processes 1, fewer workers or a higher ulimit -n; got {config.workers}", param="workers")
    need = memory_needed(config, kind, largest_shard, train_images, test_images)
    have = machine_memory(device)
    if need.total <= have:
        return
    said = (f"the run needs about {need.total / 1e9:.3g} GB of memory (its largest tensor {need.largest / 1e9:.3g} "
            f"GB), this machine has {have / 1e9:.3g} GB")
    steps = steps_for(largest_shard, config.batch_size, config.local_epochs, config.local_steps)
    plan = steps * need.plan_per_step if kind != "centralized" else 0
    rest = need.total - plan
    if plan >= rest and have > rest:  # the round's plan is most of it: name the local work, and what fits
        fits = (have - rest) // need.plan_per_step
        if config.local_steps is not None:
            raise ConfigError(f"local_steps must be at most {fits:,} for this run here: {said}; got "
                              f"{config.local_steps}", param="local_steps")
        raise ConfigError(f"local_epochs must be at most {fits // (steps // config.local_epochs):,} for this run "
                          f"here: {said}; got {config.local_epochs}", param="local_epochs")
    raise ConfigError(f"workers must be fewer, or batch_size or the model smaller, for this run here: {said}; got "
                      f"{config.workers} workers", param="workers")
