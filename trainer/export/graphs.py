"""The torch modules that become ONNX graphs: raw observations in, raw actions out.

Normalisation lives inside the graphs (PolicyNetwork keeps the statistics as buffers), so the robot
never re-implements it. The observation batch is 1 and the condition [1, C] is never expanded: it
broadcasts inside FiLM, so the encoder runs once per plan and the candidate count stays dynamic.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from trainer.models.policy_net import PolicyNetwork


class Conv1dAsMatMul(nn.Module):
    """A Conv1d computed as one batched matrix product: gather the k shifted views of the (padded)
    sequence side by side, [B, L_out, k*C] @ W [k*C, O].

    Why: onnxruntime's fp32 Conv runs one im2col + GEMM per batch element, re-reading the weights
    for every candidate; with the U-Net's short sequences (16, 8, 4 steps) that is memory-bound. As a
    MatMul the whole candidate batch is one GEMM (measured: paper-size U-Net, 32 candidates, 1 thread,
    1178 ms -> about 350 ms). int8 graphs are quantised from the plain Conv form instead, where
    onnxruntime's QLinearConv is faster than a quantised MatMul.
    """

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        o, c, k = conv.weight.shape
        self.k, self.stride, self.pad = k, conv.stride[0], conv.padding[0]
        # W'[i*C + c, o] = W[o, c, i]: column blocks in the order of the shifted views below
        self.weight = nn.Parameter(conv.weight.detach().permute(2, 1, 0).reshape(k * c, o).clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # [B, L, C]
        if self.pad:
            xt = nn.functional.pad(xt, (0, 0, self.pad, self.pad))
        length = int(xt.shape[1])  # static in the graph: the horizons are fixed, only B is dynamic
        l_out = (length - self.k) // self.stride + 1
        if self.k == 1 and self.stride == 1:
            cols = xt
        else:
            span = self.stride * (l_out - 1) + 1
            cols = torch.cat([xt[:, i:i + span:self.stride, :] for i in range(self.k)], dim=2)
        y = cols @ self.weight
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)


def conv1d_as_matmul(net: PolicyNetwork) -> PolicyNetwork:
    """A copy of ``net`` with every plain Conv1d replaced by :class:`Conv1dAsMatMul` (same function)."""
    net = copy.deepcopy(net)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if (type(child) is nn.Conv1d and child.groups == 1 and child.dilation[0] == 1
                    and child.padding_mode == "zeros" and isinstance(child.padding[0], int)):
                setattr(module, name, Conv1dAsMatMul(child))
    return net.eval()


class GeneratorGraph(nn.Module):
    """rs_imle: (obs_state [1,To,Ds], [obs_image uint8 [1,To,3,H,W]], z [N,Tp,A]) -> actions [N,Tp,A] raw."""

    def __init__(self, net: PolicyNetwork):
        super().__init__()
        self.net = net
        self.has_image = net.spec.image_shape is not None

    def forward(self, obs_state: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        obs_image, z = (rest[0], rest[1]) if self.has_image else (None, rest[0])
        cond = self.net.encode(obs_state, obs_image)
        return self.net.unnormalize_action(self.net(z, cond))


class EncoderGraph(nn.Module):
    """Baselines: raw observations -> condition [1, C]."""

    def __init__(self, net: PolicyNetwork):
        super().__init__()
        self.net = net
        self.has_image = net.spec.image_shape is not None

    def forward(self, obs_state: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.net.encode(obs_state, rest[0] if self.has_image else None)


class DenoiserGraph(nn.Module):
    """Baselines: (cond [1,C], sample [N,Tp,A] normalised, timestep [1]) -> epsilon or velocity [N,Tp,A]."""

    def __init__(self, net: PolicyNetwork):
        super().__init__()
        self.net = net

    def forward(self, cond: torch.Tensor, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.net(sample, cond, timestep)
