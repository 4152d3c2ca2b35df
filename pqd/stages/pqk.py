"""Stage ``k``: PQK's teacher, rebuilt from the weights pruning took away (Kim et al., 2021).

After ``p`` (and optionally ``q``) the student is sparse. PQK needs no separately trained
teacher: the teacher is the student with the pruned-away weights put back next to the kept
ones. pqd takes those weights from the model that entered ``p`` (the workflow passes it as
this stage's second input), so the teacher is, layer by layer,
``where(student_mask, student_weight, pre_pruning_weight)``.

How the two kinds of weights move during this phase (our choice, see README):
- restored (pruned-away) weights stay frozen at their pre-pruning values: they are what the
  student lacks, and freezing them needs no second optimiser or backward pass;
- shared (kept) weights are the student's own and only the student's loss updates them. With
  ``shared: frozen`` (default) the teacher takes them once, when the stage starts, and stays
  fixed. With ``shared: follow`` it re-reads them before every teacher forward, so the teacher
  follows the student, and its BatchNorm statistics are re-estimated every epoch. Following
  collapsed the ViT in the quick protocol: 79.4% -> 52.8% in one epoch, with the teacher itself
  falling from 73.9% to 50%, because a student chasing a teacher that moves with it has nothing
  fixed to anchor it. Frozen gave 76.1% on the same run, and both keep ResNet-18 at 100%.
The student trains with the Hinton KD loss and keeps its sparsity (and fake quantization).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from pqd.errors import PqdError
from pqd.losses import kd_objective
from pqd.masks import prunable_layers
from pqd.model_io import load_model
from pqd.qat import is_qat
from pqd.train import evaluate, freeze


def layer_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every conv/linear weight (QAT-fused layers included), by layer name."""
    return {n: m.weight for n, m in prunable_layers(model, exclude_first=False, exclude_classifier=False)}


class SharedTeacher:
    """An FP32 teacher whose kept weights are the student's and whose pruned weights are restored."""

    def __init__(
        self, student: nn.Module, source: nn.Module, device: torch.device | str = "cpu", follow: bool = False
    ) -> None:
        self.follow = follow
        self.model = freeze(copy.deepcopy(source).to(device))
        s_w, t_w = layer_weights(student), layer_weights(self.model)
        common = [n for n in t_w if n in s_w]
        bad = [n for n in common if s_w[n].shape != t_w[n].shape]
        if not common or bad or len(common) != len(t_w):
            raise PqdError(
                "stage k: the student's layers do not match the pre-pruning model's "
                f"({'shape of ' + bad[0] if bad else 'layer names'}); k needs unstructured p, not s or l"
            )
        # (teacher weight, student weight, student mask, restored weights)
        self.pairs = [(t_w[n], s_w[n], (s_w[n].detach() != 0).to(device), t_w[n].detach().clone()) for n in common]
        self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        for t, s, mask, restored in self.pairs:
            t.copy_(torch.where(mask, s.detach(), restored))

    @torch.no_grad()
    def recalibrate(self, data, batch_size: int, batches: int, device, seed: int = 0) -> None:
        """Re-estimate BatchNorm statistics (cumulative average) for the current weights."""
        self.sync()
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        gen = torch.Generator().manual_seed(seed)
        for x, _ in data.batches(
            "train", batch_size, shuffle=True, generator=gen, device=device, limit=batches * batch_size
        ):
            self.model(x)
        self.model.eval()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.follow:
            self.sync()
        with torch.no_grad():
            return self.model(x)


def run(model: nn.Module, ctx) -> nn.Module:
    """Stage ``k``: KD from the shared/restored teacher, keeping the student's zeros."""
    s = ctx.settings
    source, _ = load_model(ctx.teacher_path)
    if is_qat(source):
        raise PqdError("stage k: the model that entered p is fake-quantized; put q after p (e.g. pqk)")
    model.to(ctx.device)
    teacher = SharedTeacher(model, source, ctx.device, follow=s["shared"] == "follow")
    batch = ctx.params.train.batch_size
    teacher.recalibrate(ctx.data, batch, s["bn_batches"], ctx.device, ctx.params.seed)
    restored = sum(int((~mask).sum()) for _, _, mask, _ in teacher.pairs)
    ctx.record["teacher"] = {
        "accuracy_start": evaluate(teacher.model, ctx.data, device=ctx.device),
        "restored_weights": restored,
    }

    def recalibrate(m: nn.Module, epoch: int) -> None:  # a following teacher's weights keep changing
        if epoch > 0:
            teacher.recalibrate(ctx.data, batch, s["bn_batches"], ctx.device, ctx.params.seed + epoch)

    ctx.fit(
        model,
        lr=s["lr"],
        loss_fn=kd_objective(teacher, s["temperature"], s["alpha"]),
        epoch_hooks=[recalibrate] if teacher.follow else [],
    )
    ctx.record["teacher"]["accuracy_end"] = evaluate(teacher.model, ctx.data, device=ctx.device)
    return model
