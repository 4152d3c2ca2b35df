"""Stage ``e``: EPSD, pruning at initialisation that keeps distillable weights, then
self-distillation (Chen et al.). Its output stands in place of ``dense.pt``.

1. A randomly initialised backbone trains ``warmup_steps`` steps (cross-entropy), so that
   its own predictions, the self-distillation targets, carry some information.
2. Each weight is scored SNIP-style by ``|w * dL/dw|`` (the gradient of the loss with
   respect to a multiplicative mask at 1), accumulated over ``score_batches`` batches and
   normalised to sum 1. ``criterion: epsd`` uses the self-distillation loss
   ``(1 - a) CE(s, y) + a T^2 KL(p_snap || p_s)`` against a frozen snapshot of the warmed-up
   network; ``criterion: snip`` uses plain cross-entropy (the baseline EPSD compares with).
   The same warm-up precedes both, so only the loss differs.
3. The top weights across all prunable layers are kept to ``sparsity``; the network is
   rewound to its initial weights, masked, and trained from scratch with progressive
   self-knowledge distillation (PS-KD): at epoch ``t`` the target is
   ``(1 - a_t) onehot + a_t softmax(previous-epoch model)``, ``a_t = alpha_T * t / epochs``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.losses import kd_loss, soft_target_cross_entropy
from pqd.masks import Masks, prunable_layers
from pqd.masks import sparsity as zero_fraction
from pqd.train import make_optimizer


def saliency(model: nn.Module, ctx, criterion: str, layers: list[tuple[str, nn.Module]]) -> dict[str, torch.Tensor]:
    """Normalised ``|w * dL/dw|`` per weight of ``layers`` (model left unchanged)."""
    s = ctx.settings
    snapshot = copy.deepcopy(model).eval()
    model.zero_grad(set_to_none=True)
    model.train()
    for x, y in ctx.train_batches(s["score_batches"], ctx.params.seed + 1):
        logits = model(x)
        if criterion == "snip":
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                t = snapshot(x)
            loss = kd_loss(logits, t, y, s["temperature"], s["sd_alpha"])
        loss.backward()
    scores = {f"{n}.weight": (m.weight.detach() * m.weight.grad).abs() for n, m in layers}
    total = sum(v.sum() for v in scores.values())
    model.zero_grad(set_to_none=True)
    return {k: v / total for k, v in scores.items()}


def top_masks(scores: dict[str, torch.Tensor], sparsity: float) -> Masks:
    """Keep exactly the ``1 - sparsity`` highest-scoring weights across all layers."""
    flat = torch.cat([v.flatten() for v in scores.values()])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[flat.topk(flat.numel() - int(round(sparsity * flat.numel()))).indices] = True
    parts = keep.split([v.numel() for v in scores.values()])
    return {n: part.view_as(v) for (n, v), part in zip(scores.items(), parts)}


def warm_up(model: nn.Module, ctx, steps: int) -> None:
    t = ctx.params.train
    opt = make_optimizer(
        model.parameters(),
        t.optimizer,
        lr=ctx.settings["lr"],
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        nesterov=t.nesterov,
    )
    model.train()
    for x, y in ctx.train_batches(steps, ctx.params.seed):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()


def masks_for(model: nn.Module, ctx, criterion: str) -> tuple[Masks, dict[str, torch.Tensor]]:
    """The pruning-at-initialisation masks of ``criterion`` (epsd or snip) for ``model``."""
    s = ctx.settings
    scratch = copy.deepcopy(model).to(ctx.device)
    warm_up(scratch, ctx, s["warmup_steps"])
    layers = prunable_layers(scratch, s["exclude_first_conv"], s["exclude_classifier"])
    scores = saliency(scratch, ctx, criterion, layers)
    return top_masks(scores, s["sparsity"]), scores


def run(model: nn.Module, ctx) -> nn.Module:
    """Stage ``e``: score, mask the initial weights, train from scratch with PS-KD."""
    s = ctx.settings
    model.to(ctx.device)
    masks, _ = masks_for(model, ctx, s["criterion"])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, m in masks.items():
            params[n].mul_(m)
    other = "snip" if s["criterion"] == "epsd" else "epsd"
    other_masks, _ = masks_for(model, ctx, other)
    same = sum(int((masks[n] == other_masks[n]).sum()) for n in masks) / sum(m.numel() for m in masks.values())
    ctx.record["epsd"] = {
        "criterion": s["criterion"],
        "sparsity_at_init": zero_fraction({n: params[n] for n in masks}),
        f"mask_agreement_with_{other}": same,
    }
    state = {"prev": None, "alpha": 0.0}

    def on_epoch(m: nn.Module, epoch: int) -> None:
        state["alpha"] = s["sd_alpha"] * epoch / max(1, ctx.epochs)
        state["prev"] = copy.deepcopy(m).eval() if epoch > 0 else None

    def loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if state["prev"] is None:
            return F.cross_entropy(logits, y)
        with torch.no_grad():
            soft = F.softmax(state["prev"](x), 1)
        target = (1 - state["alpha"]) * F.one_hot(y, logits.shape[1]).float() + state["alpha"] * soft
        return soft_target_cross_entropy(logits, target)

    ctx.fit(model, lr=s["lr"], loss_fn=loss, epoch_hooks=[on_epoch], masks=masks)
    ctx.record["epsd"]["sparsity_at_end"] = zero_fraction({n: params[n] for n in masks})
    return model
