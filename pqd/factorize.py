"""Low-rank factorisation mechanics (the SlimNets study's truncated-SVD step), used by stage
``l`` and by :mod:`pqd.arch` to rebuild factorised checkpoints.

Each chosen conv (``out x in x k x k``) or linear layer becomes two thinner layers: a
``k x k`` conv (or linear) to ``rank`` channels, then a ``1 x 1`` conv (or linear) back to
``out``, initialised from the truncated SVD of the weight reshaped to ``out x (in k k)``,
so their product is the best rank-``rank`` approximation of the original. A layer is only
replaced when that reduces its parameters (and so its MACs).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from pqd.errors import PqdError
from pqd.masks import prunable_layers


class LowRank(nn.Sequential):
    """A factorised layer: ``first`` (in -> rank), then ``second`` (rank -> out, with the bias)."""


def skeleton(layer: nn.Module, rank: int = 1) -> LowRank:
    """An uninitialised factor pair with ``layer``'s interface (used to rebuild checkpoints)."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise PqdError("low-rank factorisation supports ungrouped convolutions only")
        first = nn.Conv2d(
            layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False
        )
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
    elif isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    else:
        raise PqdError(f"cannot factorise a {type(layer).__name__}; only Conv2d and Linear layers")
    return LowRank(first, second)


def choose_rank(singular: torch.Tensor, energy: Optional[float] = None, ratio: Optional[float] = None) -> int:
    """Smallest rank keeping ``energy`` of the squared singular values, or ``ratio`` of the full rank."""
    if ratio is not None:
        return max(1, math.ceil(ratio * len(singular)))
    if energy is None:
        raise PqdError("stages.l needs 'energy' or 'rank_ratio'")
    cum = torch.cumsum(singular.double() ** 2, 0) / (singular.double() ** 2).sum()
    return int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1


def factorize(layer: nn.Module, rank: int) -> LowRank:
    """Replace ``layer`` by its rank-``rank`` SVD factor pair (singular values split evenly)."""
    w = layer.weight.detach()
    u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
    root = s[:rank].sqrt()
    pair = skeleton(layer, rank)
    with torch.no_grad():
        pair[0].weight.copy_((root[:, None] * vh[:rank]).reshape(pair[0].weight.shape))
        pair[1].weight.copy_((u[:, :rank] * root).reshape(pair[1].weight.shape))
        if layer.bias is not None:
            pair[1].bias.copy_(layer.bias.detach())
    return pair


def factor_params(layer: nn.Module, rank: int) -> int:
    w = layer.weight
    return rank * (w[0].numel() + w.shape[0])


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def factorize_model(
    model: nn.Module,
    *,
    energy: Optional[float] = 0.9,
    rank_ratio: Optional[float] = None,
    exclude_first_conv: bool = True,
    exclude_classifier: bool = True,
) -> dict[str, dict]:
    """Factorise every eligible layer in place; returns per-layer rank and kept energy."""
    report = {}
    for name, layer in prunable_layers(model, exclude_first_conv, exclude_classifier):
        if isinstance(layer, LowRank) or (isinstance(layer, nn.Conv2d) and layer.groups != 1):
            continue
        w = layer.weight.detach()
        s = torch.linalg.svdvals(w.reshape(w.shape[0], -1))
        rank = choose_rank(s, energy, rank_ratio)
        if factor_params(layer, rank) >= w.numel():
            continue  # a factor pair would be larger than the layer
        set_submodule(model, name, factorize(layer, rank))
        kept = float((s[:rank] ** 2).sum() / (s**2).sum())
        report[name] = {
            "rank": rank,
            "full_rank": len(s),
            "kept_energy": kept,
            "params_before": w.numel(),
            "params_after": factor_params(layer, rank),
        }
    return report
