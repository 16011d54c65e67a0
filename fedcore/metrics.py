"""Evaluation of a model on a labelled set: loss, accuracy, per-class accuracy, what it predicts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    class_accuracy: list[float]  # accuracy on the images of each true class
    predicted: list[int]  # how many images the model assigns to each class


@torch.inference_mode()
def evaluate(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int = 10, chunk: int = 10_000
) -> Evaluation:
    """Mean cross-entropy, accuracy and per-class figures of ``module`` on (x, y)."""
    loss = torch.zeros((), device=x.device)
    pred = torch.empty_like(y)
    for s in range(0, len(y), chunk):
        logits = module(x[s : s + chunk])
        loss += F.cross_entropy(logits, y[s : s + chunk], reduction="sum")
        pred[s : s + chunk] = logits.argmax(1)
    correct = (pred == y).float()
    per_class = torch.zeros(num_classes, device=x.device).index_add_(0, y, correct)
    support = torch.bincount(y, minlength=num_classes).clamp(min=1)
    return Evaluation(
        loss=loss.item() / len(y),
        accuracy=correct.mean().item(),
        class_accuracy=(per_class / support).tolist(),
        predicted=torch.bincount(pred, minlength=num_classes).tolist(),
    )


@torch.inference_mode()
def confusion(module: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Confusion matrix: rows are true classes, columns predicted classes."""
    pred = module(x).argmax(1)
    return torch.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


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
