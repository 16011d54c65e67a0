"""Scoring in chunks: microseconds per test image of each model's forward pass over the 10,000 MNIST test images,
taken ``chunk`` images at a time, on one thread, twice; and whether every chunk size gives the logits of one pass
over all, bit for bit (fedcore.metrics.evaluate relies on it: its chunk changes no result).

    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        python benchmarks/eval_chunk.py
"""

from __future__ import annotations

import time

import torch

from fedcore import data as datasets
from fedcore.local import configure_torch
from fedcore.models import MODELS, build

CHUNKS = (100, 250, 500, 1000, 2000, 10_000)


def main() -> None:
    configure_torch(1)
    x = datasets.load("mnist").test_x
    for name in MODELS:
        torch.manual_seed(0)
        module = build(name)
        with torch.inference_mode():
            whole = module(x)
            for attempt in (1, 2):
                seconds = {}
                for chunk in CHUNKS:
                    start = time.perf_counter()
                    logits = torch.cat([module(x[s : s + chunk]) for s in range(0, len(x), chunk)])
                    seconds[chunk] = time.perf_counter() - start
                    assert torch.equal(logits, whole), f"{name}: chunks of {chunk} give other logits"
                best = min(seconds.values())
                figures = [f"{chunk}: {1e6 * s / len(x):.0f} us/image ({100 * best / s:.0f}%)"
                           for chunk, s in seconds.items()]
                print(f"{name}, pass {attempt}: " + ", ".join(figures))
    print("every chunk size gave the logits of one pass over all, bit for bit")


if __name__ == "__main__":
    main()
