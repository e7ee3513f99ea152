"""Conditional Rejection-Sampling IMLE (Rana et al., RSS 2025): the method's training objective.

For every datapoint (observation o, demonstrated chunk x):
  1. draw m latents z_1..z_m ~ N(0, I), each shaped like the action chunk [Tp, A];
  2. generate m chunks G(o, z_j) in normalised units;
  3. distance d_j = || flatten(G(o, z_j)) - flatten(x) ||_2   (plain, not squared, L2 over the
     whole normalised chunk, as ``torch.cdist`` computes it in the paper's code);
  4. reject samples with d_j <= epsilon (they already cover x; pulling them closer would collapse
     modes onto one another);
  5. the loss of the datapoint is the smallest remaining distance, min_j d_j over kept samples
     (the nearest kept sample is pulled onto the demonstration; gradients reach only it);
  6. datapoints whose m samples were all rejected are left out of the mean; if every datapoint is
     left out the loss is exactly zero.
The paper's code marks rejected samples by adding max(d) and calls a datapoint valid when its
minimum is below max(d); we use explicit masks, which agree except in the measure-zero case where
the nearest kept sample is exactly the batch maximum.

Speed (ours, same gradient): the m candidates are generated without autograd; only the selected
latent is run again with autograd. Since the min selects one sample per datapoint, the gradient
is identical to back-propagating through all m, at about a third of the compute.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from trainer.models.policy_net import PolicyNetwork
from trainer.objectives import noise


@dataclass
class RSIMLEConfig:
    n_samples: int = field(default=20, metadata={"help": "RS-IMLE: latents per datapoint m (default 20)"})
    epsilon: float = field(default=0.03, metadata={"help": "RS-IMLE: rejection radius (default 0.03)"})

    def __post_init__(self) -> None:
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples <= 0:
            raise ValueError(f"--n-samples must be a positive integer, got {self.n_samples}")
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)) or \
                not math.isfinite(self.epsilon) or self.epsilon < 0:
            raise ValueError(f"--epsilon must be a finite number >= 0, got {self.epsilon}")


def rs_imle_loss(target: torch.Tensor, samples: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, dict]:
    """RS-IMLE loss of ``samples`` [B, m, ...] against ``target`` [B, ...] (normalised units).

    Returns the loss and diagnostics: the index of the selected sample per datapoint (-1 where all
    were rejected), the fraction of datapoints kept, and distance statistics.
    """
    b, m = samples.shape[:2]
    # float32 whatever the network ran in (bfloat16 autocast): near-ties pick the same sample
    dist = torch.linalg.vector_norm(samples.reshape(b, m, -1).float() - target.reshape(b, 1, -1).float(), dim=-1)
    kept = dist > epsilon
    masked = torch.where(kept, dist, torch.full_like(dist, float("inf")))
    nearest, index = masked.min(dim=1)
    valid = kept.any(dim=1)
    # mean over valid datapoints without a branch (no host sync); all rejected: exactly zero, still attached
    weight = valid.to(dist.dtype)
    loss = (torch.where(valid, nearest, torch.zeros_like(nearest)) * weight).sum() / weight.sum().clamp(min=1.0)
    info = {
        "selected": torch.where(valid, index, torch.full_like(index, -1)),
        "kept_fraction": valid.float().mean().detach(),
        "dist_min": dist.min().detach(),
        "dist_mean": dist.mean().detach(),
    }
    return loss, info


def select_latents(net: PolicyNetwork, cond: torch.Tensor, target: torch.Tensor, cfg: RSIMLEConfig,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Draw m latents per datapoint, generate without autograd, pick the nearest kept one.

    Returns (z_selected [B, Tp, A], valid [B] bool, info).
    """
    b, tp, a = target.shape
    z = noise.randn((b, cfg.n_samples, tp, a), device=target.device, generator=generator)
    with torch.no_grad():
        samples = net(z.reshape(b * cfg.n_samples, tp, a), cond.detach().repeat_interleave(cfg.n_samples, dim=0))
        _, info = rs_imle_loss(target, samples.reshape(b, cfg.n_samples, tp, a), cfg.epsilon)
    sel = info["selected"]
    valid = sel >= 0
    z_sel = z[torch.arange(b, device=z.device), sel.clamp(min=0)]
    return z_sel, valid, info


def rs_imle_objective(net: PolicyNetwork, cond: torch.Tensor, target: torch.Tensor, cfg: RSIMLEConfig,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Training loss for one batch: condition [B, C] from the encoder, target chunk [B, Tp, A] normalised."""
    z_sel, valid, info = select_latents(net, cond, target, cfg, generator)
    # a masked mean, not a branch on valid.any(): no host synchronisation per step, one graph for
    # torch.compile; the gradient is the same (rejected datapoints weigh 0; all rejected: loss exactly 0)
    pred = net(z_sel, cond)
    dist = torch.linalg.vector_norm((pred.float() - target.float()).flatten(1), dim=-1)
    weight = valid.to(dist.dtype)
    return (dist * weight).sum() / weight.sum().clamp(min=1.0), _scalars(info)


def _scalars(info: dict) -> dict:
    """Diagnostics as detached 0-d tensors: the training loop reads them only when it logs."""
    return {k: v.detach() for k, v in info.items() if k != "selected"}


class RSIMLEObjective:
    """RS-IMLE behind the common objective interface used by the training loop."""

    timestep_embed_dim = 0

    def __init__(self, cfg: RSIMLEConfig):
        self.cfg = cfg

    def loss(self, net: PolicyNetwork, cond: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return rs_imle_objective(net, cond, target, self.cfg)
