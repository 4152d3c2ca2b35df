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
# what may follow a block's residual add before its output: activations and no-ops (BasicBlock's ReLU)
_AFTER_ADD_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Identity, nn.Dropout)
_AFTER_ADD_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.dropout)


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


def _passes_through(node: fx.Node, traced: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return isinstance(traced.get_submodule(node.target), _AFTER_ADD_MODULES)
    if node.op == "call_function":
        return node.target in _AFTER_ADD_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_residual(module: nn.Module) -> bool:
    """True when the module computes ``x + f(x)`` (then at most an activation): its output is an
    addition of its input (directly or through ``nn.Identity``) and of something computed from it,
    or of such an addition and something computed from it (a ViT block adds twice). A module that
    merely adds its input to a constant (``norm(x + pos)``) or adds before further layers is not one:
    removing it is not a bypass."""
    try:
        traced = fx.symbolic_trace(module)
    except Exception:  # noqa: BLE001 - untraceable: not a block pqd can vouch for
        return False
    graph = traced.graph
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(inputs) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return False
    same, derived = {inputs[0]}, {inputs[0]}  # the input itself; everything computed from it
    for node in graph.nodes:
        nodes = [a for a in node.all_input_nodes]
        if any(a in derived for a in nodes):
            derived.add(node)
        if node.op == "call_module" and isinstance(traced.get_submodule(node.target), nn.Identity):
            if nodes and nodes[0] in same:
                same.add(node)

    def skip_sum(node: fx.Node) -> bool:
        if not _is_add(node) or len(node.args) < 2:
            return False
        a, b = node.args[0], node.args[1]
        for skip, branch in ((a, b), (b, a)):
            if isinstance(branch, fx.Node) and branch in derived and isinstance(skip, fx.Node):
                if skip in same or skip_sum(skip):
                    return True
        return False

    node = outputs[0].args[0]
    while _passes_through(node, traced) and len(node.all_input_nodes) == 1:
        node = node.all_input_nodes[0]
    return skip_sum(node)


def removable_blocks(model: nn.Module, image_size: int) -> list[str]:
    """Names of the model's residual blocks with an identity shortcut, in forward order; innermost
    only (a stage of several blocks also adds its input, through its first block: its blocks are the
    units, removed one by one)."""
    kept: set[str] = set()  # every call kept the shape of its single tensor input
    changed: set[str] = set()  # some call did not (a module called several times counts every call)
    hooks = []
    for name, m in model.named_modules():
        if name and next(m.parameters(), None) is not None:

            def hook(mod, args, out, name=name):
                same = (
                    len(args) == 1
                    and isinstance(args[0], torch.Tensor)
                    and isinstance(out, torch.Tensor)
                    and tuple(args[0].shape) == tuple(out.shape)
                )
                (kept if same else changed).add(name)

            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.randn(*input_shape(2, image_size), device=_device(model)))
        # traced in eval mode too: a forward that branches on self.training (stochastic depth) is
        # scored and removed in eval mode
        adding = [name for name in kept - changed if _is_residual(model.get_submodule(name))]
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    inner = [n for n in adding if not any(o.startswith(f"{n}.") for o in adding)]
    order = [n for n, _ in model.named_modules()]  # definition order: forward order for these models
    return sorted(inner, key=order.index)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


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
