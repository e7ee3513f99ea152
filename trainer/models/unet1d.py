"""Diffusion Policy's conditional 1-D temporal U-Net (FiLM), used as the IMLE generator.

For RS-IMLE the U-Net's input is the latent z (shaped like the action chunk, [B, Tp, A]) and the
FiLM conditioning is the observation feature only. The diffusion / flow-matching baselines reuse
the identical network with ``timestep_embed_dim > 0``, which appends a sinusoidal step embedding
to the conditioning.

Export notes: the sequence axis is moved with ``transpose(1, 2)`` (a negative-axis Transpose from
``moveaxis`` breaks onnxruntime's static-quantisation calibration), and the observation feature
is never expanded to the candidate count: a [1, C] condition broadcasts inside FiLM, so an
exported graph keeps a dynamic number of candidates and runs the encoder once per plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class UNetConfig:
    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    n_groups: int = 8
    cond_predict_scale: bool = True
    timestep_embed_dim: int = 0  # 0 for RS-IMLE; >0 for diffusion / flow-matching denoisers


PRESETS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(down_dims=(32, 64, 128)),
    "small": UNetConfig(down_dims=(64, 128, 256)),
    "paper": UNetConfig(down_dims=(256, 512, 1024)),
}


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
                                   nn.GroupNorm(groups, c_out), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class CondResBlock1d(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias from the condition) between them."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int, predict_scale: bool):
        super().__init__()
        self.blocks = nn.ModuleList([Conv1dBlock(c_in, c_out, kernel, groups),
                                     Conv1dBlock(c_out, c_out, kernel, groups)])
        self.c_out = c_out
        self.predict_scale = predict_scale
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, c_out * 2 if predict_scale else c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        film = self.cond_encoder(cond).unsqueeze(-1)  # [Bc, C(*2), 1]; Bc = 1 broadcasts over candidates
        if self.predict_scale:
            scale, bias = film[:, : self.c_out], film[:, self.c_out:]
            out = scale * out + bias
        else:
            out = out + film
        out = self.blocks[1](out)
        return out + self.residual(x)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    args = t.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([args.sin(), args.cos()], dim=-1)


class ConditionalUnet1D(nn.Module):
    def __init__(self, action_dim: int, cond_dim: int, config: UNetConfig | None = None):
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        k, g, ps = cfg.kernel_size, cfg.n_groups, cfg.cond_predict_scale
        full_cond = cond_dim
        if cfg.timestep_embed_dim:
            d = cfg.timestep_embed_dim
            self.step_mlp = nn.Sequential(nn.Linear(d, d * 4), nn.Mish(), nn.Linear(d * 4, d))
            full_cond += d
        dims = [action_dim, *cfg.down_dims]
        pairs = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([
                CondResBlock1d(a, b, full_cond, k, g, ps), CondResBlock1d(b, b, full_cond, k, g, ps),
                nn.Conv1d(b, b, 3, 2, 1) if not last else nn.Identity()]))
        mid = cfg.down_dims[-1]
        self.mid = nn.ModuleList([CondResBlock1d(mid, mid, full_cond, k, g, ps),
                                  CondResBlock1d(mid, mid, full_cond, k, g, ps)])
        self.up = nn.ModuleList()
        for a, b in reversed(pairs[1:]):  # every up level upsamples: it undoes one down-sampling
            self.up.append(nn.ModuleList([
                CondResBlock1d(b * 2, a, full_cond, k, g, ps), CondResBlock1d(a, a, full_cond, k, g, ps),
                nn.ConvTranspose1d(a, a, 4, 2, 1)]))
        start = cfg.down_dims[0]
        self.final = nn.Sequential(Conv1dBlock(start, start, k, g), nn.Conv1d(start, action_dim, 1))

    def forward(self, sample: torch.Tensor, cond: torch.Tensor, timestep: torch.Tensor | None = None) -> torch.Tensor:
        """sample [B, Tp, A] (z or noisy actions), cond [B or 1, C], timestep [B or 1] -> [B, Tp, A]."""
        if self.config.timestep_embed_dim:
            if timestep is None:
                raise ValueError("this U-Net was built with a timestep embedding; pass timestep")
            emb = self.step_mlp(sinusoidal_embedding(timestep, self.config.timestep_embed_dim))
            if emb.shape[0] != cond.shape[0]:  # one step for every candidate, or one observation for all
                batch = max(emb.shape[0], cond.shape[0])
                emb, cond = emb.expand(batch, -1), cond.expand(batch, -1)
            cond = torch.cat([cond, emb], dim=-1)
        x = sample.transpose(1, 2)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)
