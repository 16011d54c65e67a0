"""What a worker's local training minimises: the mean cross-entropy of its model's logits, as the label-skew
remedies change it.

- FedRS (Li and Zhan 2021) scales each class's logit by ``scale``: 1 for the worker's most frequent class,
  ``alpha`` for a class it does not hold, in between by its count, so that absent classes are pushed down less.
- FedLC (Zhang et al. 2022) adds ``shift``, ``-tau * n_c^(-1/4)`` from the worker's own class counts.
- FedNTD (Lee et al. 2022) adds ``distill`` times a distillation of the global model's not-true classes: the
  KL divergence between the global and the local model's softmax over the classes other than the label, at a
  ``temperature`` (times its square, as in distillation).
- ``centered`` (ours, a diagnostic, not a published method) removes from each sample's logit gradient its mean
  over the classes: the part that raises or lowers every logit together. Plain cross-entropy has none (its
  gradient sums to zero over the classes); FedRS's restricted softmax has one wherever a class is absent.

Every term is written twice: as a value (``value``, which autograd differentiates, for models without a closed
form) and as its closed-form gradient with respect to the logits (``logit_gradient``), which the tests hold
against autograd. Tensors carry a leading worker dimension: logits ``[W, B, C]``, per-worker terms ``[W, C]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LocalLoss:
    """The local objective of W workers: cross-entropy of ``scale * z + shift`` (None: 1 and 0) plus ``distill``
    times the not-true distillation from the global model's logits at ``temperature``; with ``centered``, each
    sample's logit gradient less its mean over the classes."""

    scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    distill: float = 0.0
    temperature: float = 1.0
    centered: bool = False

    def rows(self, start: int, stop: int) -> LocalLoss:
        """The objective of workers ``start`` to ``stop - 1``."""
        return replace(self, scale=None if self.scale is None else self.scale[start:stop],
                       shift=None if self.shift is None else self.shift[start:stop])

    def _calibrated(self, z: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            z = z * self.scale[:, None, :]
        return z if self.shift is None else z + self.shift[:, None, :]

    def _not_true(self, z: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Log-softmax over the classes other than the label, at the temperature (-inf at the label)."""
        return F.log_softmax((z / self.temperature).masked_fill(true, -torch.inf), dim=2)

    def value(self, z: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, teacher: torch.Tensor | None = None
              ) -> torch.Tensor:
        """The loss summed over the workers, each worker's the mean over its batch: ``valid`` ([W, B]) is 1 for a
        real row and 0 for padding; ``teacher`` the global model's logits (FedNTD)."""
        rows = F.cross_entropy(self._calibrated(z).flatten(0, 1), y.flatten(), reduction="none").view_as(valid)
        if self.distill:
            true = F.one_hot(y, z.shape[2]).bool()
            local, glob = self._not_true(z, true), self._not_true(teacher, true)
            kl = torch.where(true, 0.0, glob.exp() * (glob - local)).sum(2)
            rows = rows + self.distill * self.temperature**2 * kl
        if self.centered:  # a term whose gradient is minus the common part, held fixed
            common = self._delta(z.detach(), y, None if teacher is None else teacher.detach()).mean(2)
            rows = rows - z.sum(2) * common
        return (rows * valid).sum(1).div(valid.sum(1)).sum()

    def _delta(self, z: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        """Each sample's gradient of its loss with respect to its logits, before centering, ``[W, B, C]``."""
        delta = torch.softmax(self._calibrated(z), 2)
        delta.scatter_add_(2, y[:, :, None], delta.new_full((1, 1, 1), -1.0).expand(*y.shape, 1))  # less one-hot
        if self.scale is not None:
            delta.mul_(self.scale[:, None, :])
        if self.distill:
            true = F.one_hot(y, z.shape[2]).bool()
            pull = self._not_true(z, true).exp_().sub_(self._not_true(teacher, true).exp_())
            delta.add_(pull, alpha=self.distill * self.temperature)
        return delta

    def logit_gradient(self, z: torch.Tensor, y: torch.Tensor, valid: torch.Tensor,
                       teacher: torch.Tensor | None = None) -> torch.Tensor:
        """d value / d z in closed form, ``[W, B, C]``."""
        delta = self._delta(z, y, teacher)
        if self.centered:
            delta.sub_(delta.mean(2, keepdim=True))
        return delta.mul_(valid[:, :, None]).div_(valid.sum(1)[:, None, None])
