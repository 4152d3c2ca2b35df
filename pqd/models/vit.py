"""A small Vision Transformer for 32x32 inputs (patch 4: 64 tokens, mean-pooled for the head).

Sized to train on a CPU in the quick protocol: embedding 96 x width, 4 blocks, 4 heads,
MLP ratio 2. Tokens are averaged for the classifier instead of prepending a class token
(as small CIFAR ViTs often do): a token concatenation is read by Torch-Pruning's dependency
tracer as a channel concatenation and breaks head pruning. Attention is written with explicit matrix products (no fused kernel) so that
FX graph-mode QAT can trace it, the FLOP counter sees it, and structured pruning can
remove whole heads: ``num_heads`` and ``head_dim`` are attributes that ``forward`` reads,
recorded in a pruned checkpoint's architecture.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pqd.constants import IMAGE_SIZE
from pqd.models import scaled


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * num_heads * self.head_dim)
        self.proj = nn.Linear(num_heads * self.head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        parts = qkv.unbind(0)  # unbind (not indexing): Torch-Pruning's tracer maps it to q/k/v
        q, k, v = parts[0], parts[1], parts[2]
        attn = torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim**-0.5)
        out = torch.matmul(attn.softmax(dim=-1), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    # Structured pruning keeps the residual (embedding) width and prunes heads and MLP units.
    keep_width = ("patch_embed",)
    # INT8: the residual stream stays float (the adds are not quantized; the linear layers' inputs
    # and weights are). OpenVINO's low-precision transformations fail to compile a QDQ graph whose
    # residual adds take two dequantized inputs, and a float residual stream is the usual choice
    # for INT8 transformers (precision of the sum of many small updates).
    qat_float_ops = ("add",)

    def __init__(
        self,
        num_classes: int = 10,
        width: float = 1.0,
        dim: int = 96,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        patch: int = 4,
        image_size: int = IMAGE_SIZE,
    ) -> None:
        super().__init__()
        dim = max(num_heads, scaled(dim, width) // num_heads * num_heads)
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image_size // patch) ** 2
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def vit(num_classes: int = 10, width: float = 1.0) -> ViT:
    return ViT(num_classes, width)
