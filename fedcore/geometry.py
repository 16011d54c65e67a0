"""The why chapter's instruments, read off a run's table of workers (``RunResult.workers``): how the workers'
updates relate to each other each round, where in the network they move the weights, and what each does to
the output layer's biases."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedcore.results import Row, RunResult


def rounds_of(result: RunResult) -> dict[int, list[Row]]:
    """The workers' rows of each round, in the order their cosines are listed."""
    out: dict[int, list[Row]] = {}
    for row in result.workers:
        out.setdefault(int(row["round"]), []).append(row)
    return out


def per_round(result: RunResult, value: Callable[[list[Row]], float]) -> tuple[list[int], list[float]]:
    """(rounds, value of each round's rows)."""
    table = rounds_of(result)
    return list(table), [value(rows) for rows in table.values()]


def output_bias_drift(result: RunResult) -> tuple[list[int], list[float]]:
    """(rounds, how far the global model's mean output-layer bias has moved since round 0): the bias part of the
    mean logit. It moves only where the workers' logit gradients have a common part, which plain cross-entropy's
    never has (they sum to zero over the classes) and FedRS's restricted softmax has wherever a worker misses
    classes."""
    means = [float(np.mean(row["output_bias"])) for row in result.rounds]
    return [int(row["round"]) for row in result.rounds], [m - means[0] for m in means]


def mean_cosine(rows: list[Row]) -> float:
    """The mean cosine similarity between the updates of a round's workers, over every pair of them."""
    return float(np.mean([c for i, row in enumerate(rows) for j, c in enumerate(row["cosine"]) if i != j]))


def output_share(rows: list[Row]) -> float:
    """The mean share (percent) of a round's update norms that lies in the output layer."""
    return float(100 * np.mean([row["output_share"] for row in rows]))


def bias_pushes(result: RunResult, rnd: int) -> tuple[list[Row], np.ndarray, np.ndarray]:
    """Round ``rnd``'s rows (by worker), each worker's change of the output biases (workers x classes) and the
    averaged model's change."""
    rows = sorted(rounds_of(result)[rnd], key=lambda row: row["worker"])
    before = np.array(result.rounds[rnd - 1]["output_bias"])
    after = np.array(result.rounds[rnd]["output_bias"])
    return rows, np.array([np.array(row["output_bias"]) - before for row in rows]), after - before


def own_and_other_push(result: RunResult, rnd: int) -> tuple[float, float]:
    """In round ``rnd``, the mean change each worker makes to the output bias of the class it holds most, and
    its mean change to the other classes' biases."""
    rows, pushes, _ = bias_pushes(result, rnd)
    home = [int(np.argmax(result.allocation[row["worker"]])) for row in rows]
    own = [pushes[i, h] for i, h in enumerate(home)]
    others = [pushes[i, d] for i, h in enumerate(home) for d in range(pushes.shape[1]) if d != h]
    return float(np.mean(own)), float(np.mean(others))
