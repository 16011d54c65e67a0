"""The three models of the report, as plain ``nn.Sequential`` stacks."""

from __future__ import annotations

from torch import nn


def mlp(num_classes: int = 10) -> nn.Sequential:
    """McMahan et al.'s 2NN: 784-200-200-10 with ReLU (199,210 parameters)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 200), nn.ReLU(),
        nn.Linear(200, 200), nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def cnn(num_classes: int = 10) -> nn.Sequential:
    """McMahan et al.'s CNN: two 5x5 conv layers (32, 64) with max-pooling, FC 512, softmax."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512), nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def logistic(num_classes: int = 10) -> nn.Sequential:
    """Softmax regression: the convex case."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))


MODELS = {"mlp": mlp, "cnn": cnn, "logistic": logistic}


def build(name: str, num_classes: int = 10) -> nn.Sequential:
    """A freshly initialised model by name (initialisation follows torch's global seed)."""
    return MODELS[name](num_classes)
