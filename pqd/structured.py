"""Stage ``s``: dependency-aware structured pruning (CPD's Comb-Prune-Distill step).

Whole output channels (and, in a transformer, whole attention heads and MLP hidden units)
are removed, so the deployed model is physically smaller: fewer parameters and MACs, and a
lower measured latency, not masks. Torch-Pruning traces the model into a dependency graph,
so layers coupled by residual adds, concatenations or attention reshapes are pruned
together for any backbone without per-architecture code. The setting is the fraction of
MACs to keep: pqd solves for the uniform per-layer channel ratio that reaches it, then
removes channels in ``steps`` rounds, fine-tuning after each (optionally distilling from the
unpruned model while pruning, as CPD does). Importance is the L2 magnitude of each coupled
group or a first-order Taylor estimate ``|w * dL/dw|`` accumulated over training batches.

The pruned architecture is recorded in the checkpoint (:mod:`pqd.arch`), so it reloads
without this module. Structured pruning reshapes FP32 layers: it runs before ``q``.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.errors import PqdError
from pqd.measure import macs


UNSUPPORTED = ("zero-padding shortcuts (resnet20/32/44/56) are not supported by the dependency tracer: "
               "use resnet18, vgg16, wrn28_10 or vit")


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{qkv projection: number of heads}`` for every attention module (``qkv`` + ``num_heads``)."""
    return {m.qkv: m.num_heads for m in model.modules() if isinstance(getattr(m, "qkv", None), nn.Linear)
            and isinstance(getattr(m, "num_heads", None), int)}


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose outputs keep their width: the classifier (its outputs are the classes) and
    any a backbone lists in ``keep_width`` (a ViT's patch embedding, which fixes the residual width)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    keep = [model.get_submodule(n) for n in getattr(model, "keep_width", ())]
    return linears[-1:] + keep


def make_pruner(model: nn.Module, ratio: float, *, importance: str = "magnitude", steps: int = 1):
    import torch_pruning as tp

    imp = {"magnitude": tp.importance.GroupMagnitudeImportance(p=2),
           "taylor": tp.importance.GroupTaylorImportance()}.get(importance)
    if imp is None:
        raise PqdError(f"unknown stages.s.importance {importance!r}; choose magnitude or taylor")
    heads = attention_heads(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.pruner.MetaPruner(
            model, torch.zeros(1, 3, 32, 32), importance=imp, pruning_ratio=ratio, iterative_steps=steps,
            ignored_layers=ignored_layers(model), num_heads=heads, prune_num_heads=bool(heads),
            prune_head_dims=False,  # whole heads go; at least one stays per attention layer
            head_pruning_ratio=min(ratio, (min(heads.values()) - 1) / min(heads.values())) if heads else 0.0,
        )


def sync_heads(model: nn.Module, pruner) -> None:
    """Torch-Pruning tracks the surviving heads per qkv layer; the modules read ``num_heads``."""
    for m in model.modules():
        if isinstance(getattr(m, "qkv", None), nn.Linear) and m.qkv in pruner.num_heads:
            m.num_heads = pruner.num_heads[m.qkv]


def prune_once(model: nn.Module, ratio: float) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of each prunable group's channels removed (magnitude)."""
    m = copy.deepcopy(model)
    pruner = make_pruner(m, ratio)
    try:
        pruner.step()
        sync_heads(m, pruner)
        with torch.no_grad():
            m.eval()(torch.zeros(1, 3, 32, 32))
    except (RuntimeError, IndexError) as e:
        raise PqdError(f"structured pruning cannot trace the channel couplings of this backbone "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:80]}); {UNSUPPORTED}") from None
    return m


def ratio_for_macs(model: nn.Module, keep: float, tol: float = 0.005) -> float:
    """The uniform channel ratio whose pruned model keeps ``keep`` of ``model``'s MACs (bisection:
    MACs fall monotonically as the ratio grows)."""
    base = macs(model)
    lo, hi = 0.0, 0.95
    floor = macs(prune_once(model, hi)) / base
    if floor > keep:
        raise PqdError(f"stages.s.macs_keep={keep} cannot be reached: channel pruning of this backbone keeps at "
                       f"least {floor:.2f} of its MACs; raise macs_keep, or note that {UNSUPPORTED}")
    for _ in range(20):
        mid = (lo + hi) / 2
        if macs(prune_once(model, mid)) / base > keep:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return hi


def taylor_gradients(model: nn.Module, ctx, batches: int) -> None:
    """Accumulate ``dL/dw`` over ``batches`` training batches for Taylor importance."""
    model.train().zero_grad()
    for x, y in ctx.train_batches(batches, ctx.params["seed"]):
        F.cross_entropy(model(x), y).backward()


def run(model: nn.Module, ctx) -> nn.Module:
    """Stage ``s``: remove channels/heads to ``macs_keep`` of the MACs in rounds, fine-tuning between."""
    from pqd.distill import kd_loss
    from pqd.train import cross_entropy

    s = ctx.settings
    model = model.cpu()
    before = {"macs": macs(model), "params": param_count(model)}
    ratio = ratio_for_macs(model, s["macs_keep"])
    rounds = max(1, min(s["steps"], ctx.epochs))
    if attention_heads(model):
        # Torch-Pruning's iterative schedule can take the last head of a layer in a later round;
        # heads (and MLP units) are therefore removed in one round, then fine-tuned
        rounds = 1
    epochs = [ctx.epochs // rounds + (1 if i < ctx.epochs % rounds else 0) for i in range(rounds)]
    loss_fn = cross_entropy
    if s["distill"]:  # CPD: distil from the unpruned model while pruning
        teacher = copy.deepcopy(model).to(ctx.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

        def loss_fn(logits, x, y):
            with torch.no_grad():
                t = teacher(x)
            return kd_loss(logits, t, y, s["temperature"], s["alpha"])

    pruner = make_pruner(model, ratio, importance=s["importance"], steps=rounds)
    for r in range(rounds):
        if s["importance"] == "taylor":
            taylor_gradients(model.to(ctx.device), ctx, s["taylor_batches"])
            model.cpu()
        pruner.step()
        sync_heads(model, pruner)
        model.zero_grad(set_to_none=True)
        ctx.fit(model, lr=s["lr"], loss_fn=loss_fn, masks={}, epochs=epochs[r])
        model.cpu()
    after = {"macs": macs(model), "params": param_count(model)}
    ctx.record["structured"] = {
        "channel_ratio": ratio, "rounds": rounds, "macs_before": before["macs"], "macs_after": after["macs"],
        "params_before": before["params"], "params_after": after["params"],
        "macs_kept": after["macs"] / before["macs"], "params_kept": after["params"] / before["params"],
        "heads": {n: m.num_heads for n, m in model.named_modules() if isinstance(getattr(m, "qkv", None), nn.Linear)
                  and isinstance(getattr(m, "num_heads", None), int)},
    }
    return model
