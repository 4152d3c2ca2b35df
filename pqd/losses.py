"""Training objectives beyond plain cross-entropy (which the training loop holds).

One formula serves every stage that distils: Hinton KD from a teacher (``d``), from the
unpruned model while pruning (``s`` with ``distill: true``), from PQK's restored teacher
(``k``) and EPSD's self-distillation saliency (``e``, where the "teacher" is a snapshot of the
network itself). Progressive self-distillation trains on soft targets, the second formula.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pqd.train import LossFn


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    The ``T^2`` factor keeps the soft-target gradients on the same scale as the
    hard-label ones when the temperature changes (Hinton et al., section 2).
    """
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1), reduction="batchmean"
    )
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student, target)


def kd_objective(teacher: Callable[[torch.Tensor], torch.Tensor], temperature: float, alpha: float) -> LossFn:
    """The training-loop loss ``(logits, x, y) -> kd_loss``, with the teacher run without autograd."""

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x)
        return kd_loss(logits, t, y, temperature, alpha)

    return loss


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability vector per sample (PS-KD's mixed targets)."""
    return torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
