"""What decides a run's bits besides its configuration: the engine's source, torch, and where it ran.

``engine_fingerprint()`` hashes the source files that decide results, the torch version and the
hand-kept ``ENGINE_VERSION`` salt; ``backend()`` names the hardware setting that changes the last bits.
Both enter the run key (``RunConfig.key``), so an edited engine or another thread count never reads
back an older result.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import torch

# Bump for a change that alters results but no hashed file shows (e.g. a dependency's behaviour).
ENGINE_VERSION = "3"
PACKAGE_DIR = Path(__file__).resolve().parent
# The modules whose source decides a run's result, relative to fedcore/. Plots, notebooks helpers, the
# store and the command line only read or show results and are left out; so is where the work runs (parallel,
# processes, executors, runner): a worker's rows of a batched matmul do not depend on the other rows, so worker
# processes give the one-process bits (tests/test_parallel.py holds them to it).
RESULT_SOURCES = (
    "engine.py",
    "local.py",
    "training.py",
    "losses.py",
    "strategies.py",
    "allocation.py",
    "models.py",
    "metrics.py",
    "data.py",
    "config.py",
    "version.py",
)


@cache
def engine_fingerprint(package_dir: Path = PACKAGE_DIR) -> str:
    """Short hex hash of RESULT_SOURCES (read from ``package_dir``), torch's version and ENGINE_VERSION."""
    digest = hashlib.sha256(f"{ENGINE_VERSION}\0{torch.__version__}\0".encode())
    for name in RESULT_SOURCES:
        digest.update(name.encode() + b"\0" + (package_dir / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@cache
def backend(device: str, threads: int) -> str:
    """The setting besides the configuration that changes a run's last bits: on CUDA the GPU's name,
    on CPU the intra-op thread count (floating-point sums are split per thread)."""
    if device != "cpu" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name()}"
    if device == "cuda":
        return "cuda:unavailable"  # such a run is refused before training
    return f"cpu:{threads}"
