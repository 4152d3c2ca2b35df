"""Backbones for 32x32 inputs, built by name from :data:`pqd.pipeline.BACKBONES`.

Every backbone takes ``num_classes`` and a ``width`` multiplier (channels scale,
depth does not) so that the same architecture can run small on a CPU. Models are
plain ``nn.Module`` trees with no quantization stubs: FX graph-mode QAT traces them.
"""

from __future__ import annotations

import importlib

import torch.nn as nn

from pqd.pipeline import BACKBONES


def build_model(backbone: str, num_classes: int, width: float = 1.0) -> nn.Module:
    module_name, fn_name = BACKBONES.get(backbone).split(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    return fn(num_classes=num_classes, width=width)


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier, at least 1 (and 4 when the base is >= 4)."""
    return max(min(channels, 4), int(round(channels * width)))
