"""Stage ``s``: dependency-aware structured pruning (CPD's Comb-Prune-Distill step).

Whole output channels (and, in a transformer, whole attention heads and MLP hidden units)
are removed, so the deployed model is physically smaller: fewer parameters and MACs, and a
lower measured latency, not masks. The budget is a fraction of the MACs to keep (the channel
ratio that reaches it is solved for, :func:`pqd.channels.ratio_for_macs`) or, with ``target:
latency``, a fraction of the unpruned model's *measured* latency in the deployed form and runtime:
the ratio is then read off the input model's latency curve (:mod:`pqd.latency_budget`), measured
by its own job where latency is measured, because MACs predict latency poorly on small layers
and at channel counts the kernels' vector width does not divide. Then channels go in ``steps`` rounds, each followed by fine-tuning, optionally distilling from
the unpruned model while pruning, as CPD does. Importance is the L2 magnitude of each coupled
group or a first-order Taylor estimate ``|w * dL/dw|`` accumulated over training batches.
Structured pruning reshapes FP32 layers: it runs before ``q``.
"""

from __future__ import annotations

import copy

import torch.nn as nn
import torch.nn.functional as F

from pqd.channels import attention_heads, make_pruner, ratio_for_macs, sync_heads
from pqd.latency_budget import monotone_keep, ratio_for_latency, target_keep
from pqd.losses import kd_objective
from pqd.macs import counts, size_change
from pqd.pipeline import latency_target
from pqd.train import cross_entropy, freeze


def taylor_gradients(model: nn.Module, ctx, batches: int) -> None:
    """Accumulate ``dL/dw`` over ``batches`` training batches for Taylor importance."""
    model.train().zero_grad()
    for x, y in ctx.train_batches(batches, ctx.params.seed):
        F.cross_entropy(model(x), y).backward()


def run(model: nn.Module, ctx) -> nn.Module:
    """Remove channels/heads to the budget (MACs or measured latency) in rounds, fine-tuning between."""
    s = ctx.settings
    model = model.cpu()
    before = counts(model, ctx.image_size)
    target = latency_target(s)
    if target:
        curve = ctx.load_curve()
        ratio, predicted = ratio_for_latency(curve, target_keep(curve, target))
        budget = {
            "target": target,
            "form": curve["form"],
            "runtime": curve["runtime"],
            "threads": curve["threads"],
            "predicted_keep": predicted,
            "predicted_ms": predicted * curve["reference_ms"],
            "curve_reference_ms": curve["reference_ms"],
            "curve": [
                {"ratio": p["ratio"], "keep": p["keep"], "fitted_keep": fit}
                for p, (_, fit) in zip(
                    sorted(curve["points"], key=lambda p: (p["ratio"], p["keep"])), monotone_keep(curve)
                )
            ],
        }
    else:
        ratio = ratio_for_macs(
            model, s["macs_keep"], ctx.image_size, allocation=s["allocation"], round_to=s["round_to"]
        )
        budget = {"target": {"macs_keep": s["macs_keep"]}}
    rounds = max(1, min(s["steps"], ctx.epochs))
    if attention_heads(model):
        # Torch-Pruning's iterative schedule can take the last head of a layer in a later round;
        # heads (and MLP units) are therefore removed in one round, then fine-tuned
        rounds = 1
    epochs = [ctx.epochs // rounds + (1 if i < ctx.epochs % rounds else 0) for i in range(rounds)]
    loss_fn = cross_entropy
    if s["distill"]:  # CPD: distil from the unpruned model while pruning
        teacher = freeze(copy.deepcopy(model).to(ctx.device))
        loss_fn = kd_objective(teacher, s["temperature"], s["alpha"])
    pruner = make_pruner(
        model,
        ratio,
        ctx.image_size,
        importance=s["importance"],
        steps=rounds,
        allocation=s["allocation"],
        round_to=s["round_to"],
    )
    for r in range(rounds):
        if s["importance"] == "taylor":
            taylor_gradients(model.to(ctx.device), ctx, s["taylor_batches"])
            model.cpu()
        pruner.step()
        sync_heads(model, pruner)
        model.zero_grad(set_to_none=True)
        ctx.fit(model, lr=s["lr"], loss_fn=loss_fn, masks={}, epochs=epochs[r])
        model.cpu()
    ctx.record["structured"] = {
        "budget": budget,
        "channel_ratio": ratio,
        "allocation": s["allocation"],
        "round_to": s["round_to"],
        "rounds": rounds,
        "out_channels": {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)},
        **size_change(before, counts(model, ctx.image_size)),
        "heads": {
            n: m.num_heads
            for n, m in model.named_modules()
            if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)
        },
    }
    return model
