"""Wide ResNet (Zagoruyko & Komodakis), pre-activation blocks, WRN-28-10 by default."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pqd.models import scaled
from pqd.models.resnet import residual_stages


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        short = x if self.shortcut is None else self.shortcut(o)
        return y + short


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WRN depth must be 6n+4")
        n = (depth - 4) // 6
        widths = [scaled(c, width) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        (self.block1, self.block2, self.block3), cin = residual_stages(WideBlock, widths[0], widths[1:], [n] * 3)
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def wrn28_10(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    return WideResNet(28, 10, num_classes, width)
