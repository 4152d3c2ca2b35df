"""Stage ``b``: depth pruning, whole residual blocks removed by measured importance.

Width pruning (``s``) cannot buy latency on a deep, narrow network at batch 1: per-layer overhead
dominates, and a ResNet-56 kept 0.46-0.56 of its INT8 latency with 96% of its MACs gone (issue 23).
This stage removes ``1 - blocks_keep`` of the removable blocks (:func:`pqd.blocks.removable_blocks`)
greedily, each time the one whose bypass changes the unpruned model's outputs least on
``score_batches`` training batches, then fine-tunes the shallower network, distilling from the
unpruned model by default (its outputs are what the removal disturbed). Because it only replaces
blocks by ``nn.Identity`` the result is an ordinary FP32 model: ``s`` can thin what is left (``bs``),
``q`` quantizes it and ``d`` distils it like any other. Runs before ``q`` (structural).
"""

from __future__ import annotations

import copy
import math

import torch.nn as nn

from pqd.blocks import greedy_removal, removable_blocks
from pqd.losses import kd_objective
from pqd.macs import counts, size_change
from pqd.train import cross_entropy, freeze


def run(model: nn.Module, ctx) -> nn.Module:
    """Remove blocks to the budget, then fine-tune (distilling from the unpruned model)."""
    s = ctx.settings
    model = model.cpu()
    before = counts(model, ctx.image_size)
    candidates = removable_blocks(model, ctx.image_size)
    n_remove = len(candidates) - math.ceil(s["blocks_keep"] * len(candidates) - 1e-9)  # keep at least the fraction
    teacher = freeze(copy.deepcopy(model).to(ctx.device)) if s["distill"] else None
    batches = [x.cpu() for x, _ in ctx.train_batches(s["score_batches"], ctx.params.seed)]
    removed = greedy_removal(model, n_remove, batches, ctx.image_size)
    loss_fn = kd_objective(teacher, s["temperature"], s["alpha"]) if teacher is not None else cross_entropy
    # masks re-derived from zeros: a sparsity p left in the kept layers survives (as in every stage but s)
    ctx.fit(model.to(ctx.device), lr=s["lr"], loss_fn=loss_fn)
    model.cpu()
    ctx.record["depth"] = {
        "budget": {"target": {"blocks_keep": s["blocks_keep"]}},
        "candidates": candidates,
        "removed": removed,
        "blocks_before": len(candidates),
        "blocks_after": len(candidates) - len(removed),
        **size_change(before, counts(model, ctx.image_size)),
    }
    return model
