"""The torch modules that become ONNX graphs: raw observations in, raw actions out.

Normalisation lives inside the graphs (PolicyNetwork keeps the statistics as buffers), so the robot
never re-implements it. The observation batch is 1 and the condition [1, C] is never expanded: it
broadcasts inside FiLM, so the encoder runs once per plan and the candidate count stays dynamic.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.models.policy_net import PolicyNetwork


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
