"""Stage ``d``: Hinton et al. (2015) knowledge distillation.

The student may be FP32 or fake-quantized; the teacher is the stage's second input model, chosen
by the ``teacher`` setting (pqd.config.teacher_pipeline: the dense model by default). Its own top-1
is recorded next to the student's, so a teacher worse than its student shows in the summary.
"""

from __future__ import annotations

import torch.nn as nn

from pqd.losses import kd_objective
from pqd.train import evaluate


def run(model: nn.Module, ctx) -> nn.Module:
    s = ctx.settings
    teacher = ctx.load_teacher()
    ctx.record["teacher"] = {"model": s["teacher"], "accuracy": evaluate(teacher, ctx.data, device=ctx.device)}
    ctx.fit(model, lr=s["lr"], loss_fn=kd_objective(teacher, s["temperature"], s["alpha"]))
    return model
