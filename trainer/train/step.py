"""One training step's forward pass as a module, so DistributedDataParallel sees exactly one forward per step.

The objective's inner passes (RS-IMLE's m candidates without autograd, then the selected latent with
it) run inside this forward; DDP averages the gradients over processes during ``backward``. With
``amp`` the network's passes run under bfloat16 autocast and hand float32 to the objective, so the
objective's arithmetic (distances, nearest-sample selection, MSE) is float32.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.models.policy_net import PolicyNetwork
from trainer.objectives import noise as draw
from trainer.train.speed import autocast


def noisy_state(obs_state: torch.Tensor, state_scale: torch.Tensor, std: float) -> torch.Tensor:
    """Observation-noise augmentation: raw state plus N(0, std^2) in normalised units, i.e. std / scale
    in each raw dimension (min-max normalisation is x * scale + offset)."""
    return obs_state + draw.randn(tuple(obs_state.shape), device=obs_state.device) * (std / state_scale)


class TrainStep(nn.Module):
    """``forward(obs_state, action, obs_image=None) -> (loss, info)``; info values are detached tensors."""

    def __init__(self, net: PolicyNetwork, objective, obs_noise: float = 0.0, amp: bool = False):
        super().__init__()
        self.net, self.objective, self.obs_noise, self.amp = net, objective, obs_noise, amp

    def _network(self, sample: torch.Tensor, cond: torch.Tensor, timestep: torch.Tensor | None = None):
        with autocast(sample.device, True):
            out = self.net(sample, cond, timestep)
        return out.float()

    def forward(self, obs_state: torch.Tensor, action: torch.Tensor, obs_image: torch.Tensor | None = None):
        net = self.net
        if self.obs_noise > 0:
            obs_state = noisy_state(obs_state, net.state_scale, self.obs_noise)
        with autocast(obs_state.device, self.amp):
            cond = net.encode(obs_state, obs_image)
        target = net.normalize_action(action)
        return self.objective.loss(self._network if self.amp else net, cond.float(), target)
