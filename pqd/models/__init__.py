"""Backbones for 32x32 inputs, built by name from :data:`pqd.catalog.BACKBONES`.

Every backbone takes ``num_classes`` and a ``width`` multiplier (channels scale,
depth does not) so that the same architecture can run small on a CPU. Models are
plain ``nn.Module`` trees with no quantization stubs: FX graph-mode QAT traces them.
This package's ``__init__`` stays torch-free: every backbone module imports it for
:func:`scaled`, and the catalogue names backbones without building them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pqd.catalog import BACKBONES, resolve

if TYPE_CHECKING:
    import torch.nn as nn


def build_model(backbone: str, num_classes: int, width: float = 1.0) -> "nn.Module":
    return resolve(BACKBONES.get(backbone).target)(num_classes=num_classes, width=width)


def scaled(channels: int, width: float) -> int:
    """Channels after the width multiplier, at least 1 (and 4 when the base is >= 4)."""
    return max(min(channels, 4), int(round(channels * width)))
