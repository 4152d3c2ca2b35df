"""ResNet-18 for CIFAR (3x3 stem, no max-pool; 1x1 projection shortcuts)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.models import scaled


class BasicBlock(nn.Module):
    """Two 3x3 conv-bn layers plus a shortcut; by default a 1x1 projection where the shape
    changes (option B). The CIFAR ResNets pass their parameter-free option-A shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if shortcut is None:
            shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def residual_stages(block, cin: int, widths: list[int], depths: list[int]) -> tuple[list[nn.Sequential], int]:
    """One ``nn.Sequential`` of ``depths[i]`` blocks ``block(cin, cout, stride)`` per stage width,
    the first block of every stage but the first halving the resolution (the layout of ResNet-18,
    the CIFAR ResNets and WRN); also the channels leaving the last stage."""
    stages = []
    for i, (cout, n) in enumerate(zip(widths, depths, strict=True)):
        stages.append(
            nn.Sequential(*(block(cin if j == 0 else cout, cout, 2 if i > 0 and j == 0 else 1) for j in range(n)))
        )
        cin = cout
    return stages, cin


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        (self.layer1, self.layer2, self.layer3, self.layer4), cin = residual_stages(
            BasicBlock, widths[0], widths, blocks
        )
        self.linear = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(num_classes: int = 10, width: float = 1.0) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes, width)
