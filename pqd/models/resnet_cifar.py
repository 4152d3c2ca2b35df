"""He et al. (2015) CIFAR ResNets 20/32/44/56 with option-A shortcuts.

Attribute names follow the widely used public implementation (``conv1``, ``bn1``,
``layer1..3``, ``linear``) so that its checkpoints import directly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.models import scaled
from pqd.models.resnet import BasicBlock, residual_stages


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by the stride and zero-pad the new channels (no parameters).

    Output channel ``j`` carries input channel ``source[j]``, or zeros where ``source[j]`` equals
    ``in_channels``: a fixed 0/1 channel selection, which structured pruning thins like a 1x1
    convolution (drop outputs: entries of ``source``; drop inputs: renumber them), so the zero-padded
    shortcut couples the block's output channels to the previous stage's (:meth:`keep_outputs`,
    :meth:`keep_inputs`). The forward pass gathers the outputs from the input plus one zero channel
    whatever the map (for the unthinned map that equals He et al.'s pad), so the traced graph never
    depends on the map's values: a QAT model is traced before its checkpoint's map is loaded.
    """

    # the map is structure, not a learned value: a checkpoint from other code (He et al.'s pad has
    # no buffer) gets it from a fresh build on import (pqd/stages/dense.py)
    structural_buffers = ("source",)

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.in_channels, self.out_channels = stride, cin, cout
        lo = (cout - cin) // 2
        source = torch.full((cout,), cin, dtype=torch.long)
        source[lo : lo + cin] = torch.arange(cin)
        self.register_buffer("source", source)

    def keep_outputs(self, keep) -> None:
        """Keep only output channels ``keep`` (sorted indices)."""
        self.source = self.source[torch.as_tensor(keep, dtype=torch.long)].clone()
        self.out_channels = len(self.source)

    def keep_inputs(self, keep) -> None:
        """Keep only input channels ``keep`` (sorted indices); outputs fed by a dropped one become zeros."""
        keep = torch.as_tensor(keep, dtype=torch.long)
        renumber = torch.full((self.in_channels + 1,), len(keep), dtype=torch.long)
        renumber[keep] = torch.arange(len(keep))
        self.source = renumber[self.source]
        self.in_channels = len(keep)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        # checkpoints written before the map was a buffer (and foreign ones) hold the default map
        if prefix + "source" not in state_dict:
            state_dict = {**state_dict, prefix + "source": self.source}
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, 1))
        return torch.index_select(x, 1, self.source)


def block_a(cin: int, cout: int, stride: int) -> BasicBlock:
    shortcut = PadShortcut(cin, cout, stride) if (stride != 1 or cin != cout) else nn.Identity()
    return BasicBlock(cin, cout, stride, shortcut)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2")
        n = (depth - 2) // 6
        widths = [scaled(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        (self.layer1, self.layer2, self.layer3), cin = residual_stages(block_a, widths[0], widths, [n] * 3)
        self.linear = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet20(num_classes: int = 10, width: float = 1.0) -> CifarResNet:
    return CifarResNet(20, num_classes, width)


def resnet32(num_classes: int = 10, width: float = 1.0) -> CifarResNet:
    return CifarResNet(32, num_classes, width)


def resnet44(num_classes: int = 10, width: float = 1.0) -> CifarResNet:
    return CifarResNet(44, num_classes, width)


def resnet56(num_classes: int = 10, width: float = 1.0) -> CifarResNet:
    return CifarResNet(56, num_classes, width)
