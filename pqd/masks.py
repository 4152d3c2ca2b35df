"""Sparsity masks: which conv/linear weights are prunable, global magnitude selection, and
the masks that keep zeros zero through every later stage.

Selection uses torch's own ``torch.nn.utils.prune.global_unstructured`` (L1 over all
prunable weights at once, so layers get different sparsities) and is made permanent
right away with ``prune.remove``: the pruned weights are exact zeros in an ordinary
``weight`` parameter. That keeps the model traceable by FX QAT and the checkpoints
plain state dicts. Every later training step re-applies the masks, and later stages
re-derive them from the zeros, so sparsity survives QAT, distillation and the INT8
conversion (per-channel symmetric quantization maps 0.0 to the integer 0).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import prune as tprune

Masks = dict[str, torch.Tensor]


def prunable_layers(
    model: nn.Module, exclude_first: bool = True, exclude_classifier: bool = True
) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers (QAT-fused ones included) in execution/registration order,
    optionally without the first conv (few weights, large accuracy effect) and the
    final classifier."""
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(getattr(m, "weight", None), nn.Parameter)
    ]
    convs = [n for n, m in layers if isinstance(m, nn.modules.conv._ConvNd)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    drop = set()
    if exclude_first and convs:
        drop.add(convs[0])
    if exclude_classifier and linears:
        drop.add(linears[-1])
    return [(n, m) for n, m in layers if n not in drop]


def global_magnitude_prune(model: nn.Module, sparsity: float, layers: list[tuple[str, nn.Module]]) -> Masks:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights across ``layers``."""
    if sparsity > 0:
        tprune.global_unstructured(
            [(m, "weight") for _, m in layers], pruning_method=tprune.L1Unstructured, amount=float(sparsity)
        )
        for _, m in layers:
            tprune.remove(m, "weight")
    return {f"{n}.weight": (m.weight.detach() != 0) for n, m in layers}


def masks_from_zeros(model: nn.Module) -> Masks:
    """Masks of every conv/linear weight that holds exact zeros (a pruned model's state)."""
    masks = {}
    for n, m in prunable_layers(model, exclude_first=False, exclude_classifier=False):
        nz = m.weight.detach() != 0
        if not bool(nz.all()):
            masks[f"{n}.weight"] = nz
    return masks


def mask_hook(masks: Masks):
    """Step hook: multiply weights by their masks after each optimiser step."""

    on_device: Masks = {}  # moved once, not copied to the GPU on every step

    def hook(model: nn.Module) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in masks.items():
                p = params[name]
                m = on_device.get(name)
                if m is None or m.device != p.device:
                    m = on_device[name] = mask.to(p.device)
                p.mul_(m)

    return hook


def sparsity(tensors: dict[str, torch.Tensor]) -> float:
    """Fraction of exact zeros over all given tensors."""
    total = sum(t.numel() for t in tensors.values())
    zeros = sum(int((t == 0).sum()) for t in tensors.values())
    return zeros / max(1, total)
