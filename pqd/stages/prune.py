"""Stage ``p``: global unstructured magnitude pruning with fine-tuning.

Selection uses torch's own ``torch.nn.utils.prune.global_unstructured`` (L1 over all
prunable weights at once, so layers get different sparsities; see :mod:`pqd.masks`), made
permanent right away: the pruned weights are exact zeros in an ordinary ``weight``
parameter. Every later training step re-applies the masks, and later stages re-derive them
from the zeros, so sparsity survives QAT, distillation and the INT8 conversion (per-channel
symmetric quantization maps 0.0 to the integer 0).
"""

from __future__ import annotations

import torch.nn as nn

from pqd.masks import Masks, global_magnitude_prune, prunable_layers, sparsity


def cubic_schedule(final: float, epoch: int, epochs: int, gradual: bool) -> float:
    """Zhu & Gupta's cubic ramp: sparsity at the start of ``epoch``, reaching ``final``
    at the start of the last epoch so that one epoch fine-tunes at full sparsity."""
    if not gradual or epochs <= 2:
        return final
    t = min(1.0, (epoch + 1) / (epochs - 1))
    return final * (1 - (1 - t) ** 3)


def run(model: nn.Module, ctx) -> nn.Module:
    """Prune to ``sparsity`` (one-shot or gradually) while fine-tuning."""
    s = ctx.settings
    layers = prunable_layers(model, s["exclude_first_conv"], s["exclude_classifier"])
    masks: Masks = {}
    gradual = s["schedule"] == "gradual"

    def prune_epoch(m: nn.Module, epoch: int) -> None:
        masks.clear()
        masks.update(global_magnitude_prune(m, cubic_schedule(s["sparsity"], epoch, ctx.epochs, gradual), layers))

    if ctx.epochs <= 0:
        prune_epoch(model, 0)
    ctx.fit(model, lr=s["lr"], epoch_hooks=[prune_epoch], masks=masks)
    ctx.record["sparsity_target"] = s["sparsity"]
    ctx.record["sparsity_prunable"] = sparsity({n: m.weight.detach() for n, m in layers})
    return model
