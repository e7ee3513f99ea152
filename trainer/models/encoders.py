"""Observation encoders: state (identity or MLP) and a compact ResNet-18 with GroupNorm for images.

torchvision does not import beside the CPU torch wheel used here, so the ResNet-18 is our own
(same block layout as torchvision's resnet18, BatchNorm replaced by GroupNorm as Diffusion Policy
does, because BatchNorm statistics drift with small batches and EMA weights).
"""
from __future__ import annotations

import torch
from torch import nn


class StateEncoder(nn.Module):
    """Flattens the [B, To, F] history; ``kind='mlp'`` adds a two-layer MLP."""

    def __init__(self, in_dim: int, kind: str = "identity", hidden: int = 256):
        super().__init__()
        if kind == "identity":
            self.net: nn.Module = nn.Identity()
            self.out_dim = in_dim
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Mish(), nn.Linear(hidden, hidden))
            self.out_dim = hidden
        else:
            raise ValueError(f"unknown state encoder {kind!r} (identity or mlp)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.n1 = _gn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.n2 = _gn(c_out)
        self.act = nn.ReLU()
        self.short = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _gn(c_out))
                      if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.n1(self.conv1(x)))
        return self.act(self.n2(self.conv2(y)) + self.short(x))


class ResNet18GN(nn.Module):
    """ResNet-18 (2-2-2-2 basic blocks, 64..512 channels) with GroupNorm; global average pool -> 512."""

    out_dim = 512

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), _gn(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, c = [], 64
        for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x)).mean(dim=(2, 3))
