"""Flow-matching baseline (conditional rectified flow) on the same U-Net.

Time convention (shared with :func:`runtime.samplers.sample_euler`): t ~ U(0, 1), noise x0 ~ N(0, I)
at t = 0, the demonstrated chunk x1 at t = 1, the linear path x_t = (1 - t) x0 + t x1 and the
velocity target x1 - x0, regressed with an MSE. The network's timestep input is t itself, in [0, 1].
The timestep embedding is 128-dimensional, as for the diffusion baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.objectives import noise as draw


@dataclass
class FlowConfig:
    timestep_embed_dim: int = 128


class FlowMatchingObjective:
    """``loss(net, cond [B, C], target [B, Tp, A] normalised) -> (mse, metrics)``."""

    def __init__(self, cfg: FlowConfig | None = None):
        self.cfg = cfg or FlowConfig()
        self.timestep_embed_dim = self.cfg.timestep_embed_dim

    def loss(self, net, cond: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b = target.shape[0]
        t = draw.rand((b,), device=target.device)
        x0 = draw.randn(tuple(target.shape), device=target.device)
        tt = t.reshape(-1, 1, 1)
        x_t = (1.0 - tt) * x0 + tt * target
        pred = net(x_t, cond, t)
        loss = F.mse_loss(pred.float(), target - x0)
        return loss, {"mse": loss.detach()}  # a tensor: the loop reads it when it logs (no sync per step)
