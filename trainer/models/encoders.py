"""Observation encoders: state (identity or MLP) and two image encoders.

- ``resnet18gn``: the paper's ResNet-18 with GroupNorm. torchvision does not import beside the CPU
  torch wheel used here, so it is our own: torchvision's resnet18 block layout (7x7/2 stem + max
  pool, 2-2-2-2 basic blocks of 64..512 channels), every BatchNorm replaced by GroupNorm with
  channels // 16 groups (Diffusion Policy's ``replace_bn_with_gn``: BatchNorm statistics drift with
  small batches and EMA weights) and the global average pool of Diffusion Policy's vision encoder
  (``get_resnet`` with ``fc = Identity``) -> 512 features per frame.
- ``light``: a CPU budget encoder: 4 conv layers (3x3, 32-32-32-64 channels, strides 2-2-1-1 to a
  21x21 map of an 84x84 crop, GroupNorm, ReLU) and a spatial-softmax keypoint head (robomimic's
  SpatialSoftmax, which Diffusion Policy's hybrid encoder uses): 32 keypoints -> 64 features per
  frame; 19 M multiply-adds per 84x84 frame against ResNet-18-GN's 296 M (measured choice:
  docs/benchmarks.md, "Image policies").
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_stages(stages: Sequence[nn.Module], x: torch.Tensor, recompute: bool) -> torch.Tensor:
    """Apply ``stages`` in order. With ``recompute`` (training only), each stage keeps only its input for
    the backward pass and recomputes its activations there: the same gradients for less memory
    (``--recompute-encoder``; GroupNorm and ReLU have no randomness, so the recomputation is exact)."""
    for stage in stages:
        x = checkpoint(stage, x, use_reentrant=False) if recompute else stage(x)
    return x


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
    recompute = False  # set by the trainer (--recompute-encoder): see run_stages

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), _gn(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, c = [], 64
        for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c = c_out
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recompute = self.recompute and self.training and torch.is_grad_enabled()
        return run_stages((self.stem, *self.layers), x, recompute).mean(dim=(2, 3))


class SpatialSoftmax(nn.Module):
    """Feature map [N, C, H, W] -> ``keypoints`` expected (x, y) positions in [-1, 1] -> [N, 2K]
    (a 1x1 conv picks the keypoint maps, a softmax over each map gives its expected location)."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.kp = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.kp(x)
        n, k, h, w = x.shape
        attn = torch.softmax(x.reshape(n, k, h * w), dim=-1)
        # float32 arange, not linspace: the legacy ONNX exporter traced linspace in float64
        ys = torch.arange(h, device=x.device, dtype=torch.float32) * (2.0 / max(1, h - 1)) - 1.0
        xs = torch.arange(w, device=x.device, dtype=torch.float32) * (2.0 / max(1, w - 1)) - 1.0
        ys, xs = ys.to(attn.dtype), xs.to(attn.dtype)
        grid_x = xs.repeat(h)  # [h*w], x varies fastest (row-major pixels)
        grid_y = ys.repeat_interleave(w)
        return torch.cat([attn @ grid_x[:, None], attn @ grid_y[:, None]], dim=-1).reshape(n, 2 * k)


class LightConvEncoder(nn.Module):
    """4 conv layers (3x3; strides 2, 2, 1, 1; 32-32-32-64 channels; GroupNorm + ReLU) + spatial
    softmax with 32 keypoints -> 64 features per frame. Both strides come first: full-resolution
    layers cost most on a CPU (32-32-64-64 with strides 2-1-2-1 trained at half the speed)."""

    keypoints = 32
    out_dim = 2 * keypoints
    recompute = False  # set by the trainer (--recompute-encoder): see run_stages

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for c_out, stride in [(32, 2), (32, 2), (32, 1), (64, 1)]:
            layers += [nn.Conv2d(c, c_out, 3, stride, 1, bias=False), _gn(c_out), nn.ReLU()]
            c = c_out
        self.convs = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c, self.keypoints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.recompute and self.training and torch.is_grad_enabled()):
            return self.pool(self.convs(x))
        layers = tuple(self.convs)  # conv + GroupNorm + ReLU per stage; the state-dict keys stay convs.N
        return self.pool(run_stages([nn.Sequential(*layers[i:i + 3]) for i in range(0, len(layers), 3)], x, True))


IMAGE_ENCODERS = {"resnet18gn": ResNet18GN, "light": LightConvEncoder}


def build_image_encoder(kind: str) -> nn.Module:
    """The image encoder named ``kind`` (a key of IMAGE_ENCODERS); ``out_dim`` features per frame."""
    if kind not in IMAGE_ENCODERS:
        raise ValueError(f"unknown image encoder {kind!r} (one of {', '.join(IMAGE_ENCODERS)})")
    return IMAGE_ENCODERS[kind]()
