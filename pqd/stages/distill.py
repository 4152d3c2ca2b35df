"""Stage ``d``: Hinton et al. (2015) knowledge distillation.

The student may be FP32 or fake-quantized; the teacher is the stage's second input model
(the dense FP32 model, see :class:`~pqd.pipeline.StageSpec` ``teacher``).
"""

from __future__ import annotations

import torch.nn as nn

from pqd.losses import kd_objective


def run(model: nn.Module, ctx) -> nn.Module:
    s = ctx.settings
    ctx.fit(model, lr=s["lr"], loss_fn=kd_objective(ctx.load_teacher(), s["temperature"], s["alpha"]))
    return model
