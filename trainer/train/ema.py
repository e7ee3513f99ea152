"""Exponential moving average of weights, with Diffusion Policy's warm-up of the decay."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, max_decay: float = 0.9999, power: float = 0.75):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.power, self.updates = max_decay, power, 0

    def decay(self) -> float:
        # small early, so the average is not dominated by the random initialisation
        return min(self.max_decay, max(0.0, 1.0 - (1.0 + self.updates) ** -self.power))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        # one fused launch for all parameters (d * ema + (1 - d) * p), not two kernels per tensor
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
