"""Evaluation of a model on a labelled set: loss, accuracy, per-class accuracy, what it predicts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Images per forward pass, the fastest here (benchmarks/eval_chunk.py): the CNN's, and the Linear/ReLU stacks' (the
# 2NN, softmax regression: 10% faster than 100 for the 2NN). Every chunk gives the same logits, bit for bit.
EVAL_CHUNK = 100
FUSED_EVAL_CHUNK = 500


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    class_accuracy: list[float]  # accuracy on the images of each true class
    predicted: list[int]  # how many images the model assigns to each class
    confusion: list[list[int]]  # rows true classes, columns predicted classes


@torch.inference_mode()
def evaluate(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int = 10, chunk: int = EVAL_CHUNK
) -> Evaluation:
    """Mean cross-entropy, accuracy, per-class figures and confusion matrix of ``module`` on (x, y). The forward
    passes take ``chunk`` images at a time; the loss is one sum over all the logits."""
    logits = torch.cat([module(x[s : s + chunk]) for s in range(0, len(y), chunk)])
    loss = F.cross_entropy(logits, y, reduction="sum")
    pred = logits.argmax(1)
    matrix = torch.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    support = matrix.sum(1).clamp(min=1)
    return Evaluation(
        loss=loss.item() / len(y),
        accuracy=(pred == y).float().mean().item(),
        class_accuracy=(matrix.diagonal().to(logits.dtype) / support).tolist(),
        predicted=matrix.sum(0).tolist(),
        confusion=matrix.cpu().tolist(),
    )


def update_geometry(
    global_params: torch.Tensor, updated: list[torch.Tensor], output: slice, output_bias: slice
) -> list[dict[str, object]]:
    """How the workers' models moved from the global one this round, one dict per worker: the norm of
    its update, the share of that norm in the output layer, the cosine similarity of its update with
    each worker's (itself included) and its output-layer biases."""
    deltas = torch.stack([p - global_params for p in updated])
    norms = deltas.norm(dim=1)
    # clamped to their mathematical ranges: rounding can put a vector's cosine with itself a few ulps above 1
    cosine = ((deltas @ deltas.T) / (norms[:, None] * norms[None, :]).clamp(min=1e-12)).clamp(-1.0, 1.0)
    output_share = (deltas[:, output].norm(dim=1) / norms.clamp(min=1e-12)).clamp(0.0, 1.0)
    return [
        {"update_norm": norms[i].item(), "output_share": output_share[i].item(), "cosine": cosine[i].tolist(),
         "output_bias": updated[i][output_bias].tolist()}
        for i in range(len(updated))
    ]
