"""Structured (channel / head) pruning mechanics on Torch-Pruning's dependency graph.

Torch-Pruning traces a model into a dependency graph, so layers coupled by residual adds,
concatenations or attention reshapes lose the same channels together for any backbone without
per-architecture code. This module builds the pruner (importance, ignored layers, attention
heads) and solves for the uniform channel ratio that reaches a MACs target; stage ``s``
(:mod:`pqd.stages.structured`) decides when to prune and how to fine-tune. The pruned
architecture is recorded in the checkpoint (:mod:`pqd.arch`), so it reloads without this module.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from pqd.constants import input_shape
from pqd.errors import PqdError
from pqd.macs import macs

UNSUPPORTED = "use a backbone whose channel couplings Torch-Pruning can trace"


def channel_map_pruner():
    """Torch-Pruning's pruner for parameter-free channel maps: modules that say which output
    channel takes which input channel and thin themselves through ``keep_outputs(keep)`` and
    ``keep_inputs(keep)`` (the option-A shortcut of the CIFAR ResNets). Registered for every such
    module type, so the dependency graph couples their outputs to the residual add and their
    inputs to the layer before, like a 1x1 convolution with no weights."""
    import torch_pruning as tp

    class ChannelMapPruner(tp.pruner.function.BasePruningFunc):
        TARGET_MODULES = None

        def prune_out_channels(self, layer, idxs):
            drop = set(int(i) for i in idxs)
            layer.keep_outputs([i for i in range(layer.out_channels) if i not in drop])
            return layer

        def prune_in_channels(self, layer, idxs):
            drop = set(int(i) for i in idxs)
            layer.keep_inputs([i for i in range(layer.in_channels) if i not in drop])
            return layer

        def get_out_channels(self, layer):
            return layer.out_channels

        def get_in_channels(self, layer):
            return layer.in_channels

    return ChannelMapPruner()


def channel_maps(model: nn.Module) -> dict:
    """``{module type: pruner}`` for the channel-map modules in ``model`` (see :func:`channel_map_pruner`)."""
    types = {type(m) for m in model.modules() if hasattr(m, "keep_outputs") and hasattr(m, "keep_inputs")}
    return {t: channel_map_pruner() for t in types}


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{qkv projection: number of heads}`` for every attention module (``qkv`` + ``num_heads``)."""
    return {
        m.qkv: m.num_heads
        for m in model.modules()
        if isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int)
    }


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose outputs keep their width: the classifier (its outputs are the classes) and
    any a backbone lists in ``keep_width`` (a ViT's patch embedding, which fixes the residual width)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    keep = [model.get_submodule(n) for n in getattr(model, "keep_width", ())]
    return linears[-1:] + keep


ALLOCATIONS = ("uniform", "global")


def make_pruner(
    model: nn.Module,
    ratio: float,
    image_size: int,
    *,
    importance: str = "magnitude",
    steps: int = 1,
    allocation: str = "uniform",
    round_to: int = 1,
):
    """Torch-Pruning's pruner for ``ratio`` of the channels. ``allocation``: ``uniform`` takes the
    same fraction from every coupled group; ``global`` ranks all groups' channels together by
    normalised importance, so layers with less important channels lose more (Torch-Pruning's
    global pruning; no layer loses more than 90%). ``round_to``: kept channel counts are multiples
    of it (vector widths of the INT8 kernels; 1 = any count)."""
    import torch_pruning as tp

    imp = {
        "magnitude": tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": tp.importance.GroupTaylorImportance(),
    }.get(importance)
    if imp is None:
        raise PqdError(f"unknown stages.s.importance {importance!r}; choose magnitude or taylor")
    if allocation not in ALLOCATIONS:
        raise PqdError(f"unknown stages.s.allocation {allocation!r}; choose {' or '.join(ALLOCATIONS)}")
    heads = attention_heads(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.pruner.MetaPruner(
            model,
            torch.zeros(*input_shape(1, image_size)),
            importance=imp,
            pruning_ratio=ratio,
            iterative_steps=steps,
            ignored_layers=ignored_layers(model),
            num_heads=heads,
            prune_num_heads=bool(heads),
            prune_head_dims=False,  # whole heads go; at least one stays per attention layer
            head_pruning_ratio=min(ratio, (min(heads.values()) - 1) / min(heads.values())) if heads else 0.0,
            customized_pruners=channel_maps(model),
            global_pruning=allocation == "global",
            max_pruning_ratio=0.9 if allocation == "global" else 1.0,
            round_to=round_to if round_to > 1 else None,
        )


def sync_heads(model: nn.Module, pruner) -> None:
    """Torch-Pruning tracks the surviving heads per qkv layer; the modules read ``num_heads``."""
    for m in model.modules():
        if isinstance(getattr(m, "qkv", None), nn.Linear) and m.qkv in pruner.num_heads:
            m.num_heads = pruner.num_heads[m.qkv]


def prune_once(
    model: nn.Module, ratio: float, image_size: int, allocation: str = "uniform", round_to: int = 1
) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of its prunable channels removed (magnitude), allocated
    and rounded as :func:`make_pruner` says."""
    m = copy.deepcopy(model)
    pruner = make_pruner(m, ratio, image_size, allocation=allocation, round_to=round_to)
    try:
        pruner.step()
        sync_heads(m, pruner)
        with torch.no_grad():
            m.eval()(torch.zeros(*input_shape(1, image_size)))
    except (RuntimeError, IndexError) as e:
        raise PqdError(
            f"structured pruning cannot trace the channel couplings of this backbone "
            f"({type(e).__name__}: {str(e).splitlines()[0][:80]}); {UNSUPPORTED}"
        ) from None
    return m


def ratio_for_macs(
    model: nn.Module, keep: float, image_size: int, tol: float = 0.005, allocation: str = "uniform", round_to: int = 1
) -> float:
    """The channel ratio whose pruned model keeps ``keep`` of ``model``'s MACs (bisection: MACs
    fall monotonically as the ratio grows)."""
    base = macs(model, image_size)

    def kept(ratio: float) -> float:
        return macs(prune_once(model, ratio, image_size, allocation, round_to), image_size) / base

    # Torch-Pruning leaves a group whole when a ratio would empty it, so on thin layers the
    # highest ratio is not always the smallest model: start from the smallest of a few
    lo, (floor, hi) = (
        0.0,
        min((kept(r), r) for r in ((0.95, 0.9, 0.85, 0.8) if allocation == "uniform" else (0.85, 0.8, 0.75))),
    )
    if floor > keep:
        raise PqdError(
            f"stages.s.macs_keep={keep} cannot be reached: channel pruning of this backbone keeps at "
            f"least {floor:.2f} of its MACs; raise stages.s.macs_keep above {floor:.2f}"
        )
    for _ in range(20):
        mid = (lo + hi) / 2
        if kept(mid) > keep:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return hi
