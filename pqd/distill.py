"""Knowledge distillation (stage ``d``): Hinton et al. (2015) soft-target loss.

The student may be FP32 or fake-quantized; the teacher is the dense FP32 model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    The ``T^2`` factor keeps the soft-target gradients on the same scale as the
    hard-label ones when the temperature changes (Hinton et al., section 2).
    """
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                    reduction="batchmean")
    return alpha * temperature ** 2 * soft + (1 - alpha) * F.cross_entropy(student, target)


def run(model: nn.Module, ctx) -> nn.Module:
    s = ctx.settings
    teacher = ctx.load_teacher()

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x)
        return kd_loss(logits, t, y, s["temperature"], s["alpha"])

    ctx.fit(model, lr=s["lr"], loss_fn=loss)
    return model
