"""Residual blocks a network can lose whole: finding them, scoring them, removing them.

Why depth: at batch 1 on small inputs a deep, narrow network spends its time on per-layer
overhead, not on MACs. A ResNet-56 pruned by width to 14.5% of its MACs still took 0.58-0.70 of
its INT8 latency (issue 23); removing whole blocks removes their overhead with them.

A *removable block* is a module that computes ``x + f(x)`` with an identity shortcut: its output
has its input's shape, and in its FX graph an addition takes the module's input directly. That
finds torchvision's BasicBlock/Bottleneck without downsampling, MobileNet's and EfficientNet's
inverted residuals with ``use_res_connect``, ConvNeXt's CNBlock, a ViT encoder block and pqd's
own residual blocks, and nothing that changes shape. Removing one replaces it by
``nn.Identity`` (the block's output becomes its input), so the model stays an ordinary module:
the architecture records the removed names (:mod:`pqd.arch`) and reloads with
``weights_only=True``, and width pruning, QAT and export see a shallower network of the same
kind. Importance is *measured*: the KL divergence of the model's outputs when a block is
bypassed, on training batches (a block whose removal changes the predictions least goes first).
"""

from __future__ import annotations

import copy
import operator
from typing import Iterable, Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from pqd.constants import input_shape

_ADDS = (operator.add, operator.iadd, torch.add)


def _adds_its_input(module: nn.Module) -> bool:
    """True when the module's FX graph adds its (single) input, directly or through ``nn.Identity``
    shortcuts, to something: an identity shortcut."""
    try:
        traced = fx.symbolic_trace(module)
    except Exception:  # noqa: BLE001 - untraceable: not a block pqd can vouch for
        return False
    inputs = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return False
    same = {inputs[0]}  # nodes that are the input itself
    for node in traced.graph.nodes:
        if node.op == "call_module" and isinstance(traced.get_submodule(node.target), nn.Identity):
            if node.args and node.args[0] in same:
                same.add(node)
        is_add = (node.op == "call_function" and node.target in _ADDS) or (
            node.op == "call_method" and node.target in ("add", "add_")
        )
        if is_add and any(a in same for a in node.args):
            return True
    return False


def removable_blocks(model: nn.Module, image_size: int) -> list[str]:
    """Names of the model's residual blocks with an identity shortcut, in forward order; innermost
    only (a stage of several blocks also adds its input, through its first block: its blocks are the
    units, removed one by one)."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if name and next(m.parameters(), None) is not None:

            def hook(mod, args, out, name=name):
                if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    if tuple(args[0].shape) == tuple(out.shape) and name not in shapes:
                        shapes[name] = tuple(out.shape)

            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.randn(*input_shape(2, image_size)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    adding = [name for name in shapes if _adds_its_input(model.get_submodule(name))]
    inner = [n for n in adding if not any(o.startswith(f"{n}.") for o in adding)]
    order = [n for n, _ in model.named_modules()]  # definition order: forward order for these models
    return sorted(inner, key=order.index)


def remove(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Replace each named block by ``nn.Identity`` (in place; returns the model)."""
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def removed_blocks(model: nn.Module, reference: nn.Module) -> list[str]:
    """The blocks of ``reference`` (a fresh build of the backbone) that are an ``nn.Identity`` in ``model``."""
    ours = dict(model.named_modules())
    return [
        n
        for n, m in reference.named_modules()
        if n and not isinstance(m, nn.Identity) and isinstance(ours.get(n), nn.Identity)
    ]


@torch.no_grad()
def bypass_scores(
    model: nn.Module, candidates: list[str], batches: list[torch.Tensor], reference: Optional[list] = None
) -> dict[str, float]:
    """Per candidate, the mean KL(reference outputs || outputs with that block bypassed) over
    ``batches`` (eval mode). ``reference``: the logits to compare against (default: the model's own),
    so that a greedy removal keeps measuring against the unpruned model."""
    model.eval()
    reference = reference if reference is not None else [model(x) for x in batches]
    scores = {}
    for name in candidates:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        block = getattr(owner, child)
        setattr(owner, child, nn.Identity())
        try:
            kl = [
                F.kl_div(F.log_softmax(model(x), 1), F.softmax(t, 1), reduction="batchmean").item()
                for x, t in zip(batches, reference)
            ]
        finally:
            setattr(owner, child, block)
        scores[name] = sum(kl) / len(kl)
    return scores


def greedy_removal(model: nn.Module, n_remove: int, batches: list[torch.Tensor], image_size: int) -> list[dict]:
    """Remove ``n_remove`` blocks one at a time, each time the one whose bypass moves the outputs
    least from the *unpruned* model's (scores recomputed after every removal: blocks compensate for
    each other, so the second-least important block alone is not the second to go). Returns, in
    order, ``{"block", "kl"}`` of what was removed (the model is changed in place)."""
    model.eval()
    with torch.no_grad():
        reference = [model(x) for x in batches]
    removed: list[dict] = []
    for _ in range(n_remove):
        candidates = removable_blocks(model, image_size)
        if not candidates:
            break
        scores = bypass_scores(model, candidates, batches, reference)
        best = min(candidates, key=lambda n: scores[n])
        remove(model, [best])
        removed.append({"block": best, "kl": scores[best]})
    return removed


def without_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """A copy of ``model`` with the named blocks removed (the latency curve's and probe's variants)."""
    return remove(copy.deepcopy(model), names)
