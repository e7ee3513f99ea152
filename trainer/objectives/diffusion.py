"""Diffusion Policy baseline (Chi et al., RSS 2023) on the same U-Net: DDPM with epsilon prediction.

Training: t ~ U{0, ..., T-1}, eps ~ N(0, I), x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, and the
network (given x_t, the observation condition and t as a float) regresses eps with an MSE.
The schedule is :func:`runtime.samplers.ddpm_schedule` (100 steps, squaredcos_cap_v2), the one the
robot's numpy samplers use, so training and inference cannot drift apart.

The timestep embedding is 128-dimensional (Diffusion Policy uses 256): the state condition here
is only ~10 numbers, and 128 keeps the baseline's FiLM layers the size of RS-IMLE's plus a little.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from runtime.samplers import N_TRAIN_STEPS, ddpm_schedule
from trainer.objectives import noise as draw


@dataclass
class DiffusionConfig:
    n_train_steps: int = N_TRAIN_STEPS
    timestep_embed_dim: int = 128


class DiffusionObjective:
    """``loss(net, cond [B, C], target [B, Tp, A] normalised) -> (mse, metrics)``."""

    def __init__(self, cfg: DiffusionConfig | None = None):
        self.cfg = cfg or DiffusionConfig()
        self.timestep_embed_dim = self.cfg.timestep_embed_dim
        sched = ddpm_schedule(self.cfg.n_train_steps)
        self._abar = torch.as_tensor(sched.alphas_cumprod, dtype=torch.float32)

    def noisy(self, target: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) for integer timesteps ``t`` [B]."""
        abar = self._abar.to(target.device)[t].reshape(-1, 1, 1)
        return abar.sqrt() * target + (1.0 - abar).sqrt() * noise

    def loss(self, net, cond: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b = target.shape[0]
        t = draw.randint(self.cfg.n_train_steps, (b,), device=target.device)
        noise = draw.randn(tuple(target.shape), device=target.device)
        pred = net(self.noisy(target, t, noise), cond, t.float())
        loss = F.mse_loss(pred.float(), noise)
        return loss, {"mse": loss.detach()}  # a tensor: the loop reads it when it logs (no sync per step)
