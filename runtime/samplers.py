"""Noise schedule and samplers of the baselines, in numpy (the robot never imports torch).

The trainer's diffusion objective imports :func:`ddpm_schedule` from here, so training and the
robot use one schedule by construction. Every sampler calls ``step_fn(x, t)`` with ``x`` float32
[N, Tp, A] in normalised units and a Python float ``t``, and gets the model's output back:

- DDPM / DDIM: ``t`` is the integer train timestep (0..n_train-1) as a float; output epsilon.
- Euler (flow matching): ``t`` in [0, 1]; output the velocity.

Flow-matching time convention (the trainer's ``flow_matching`` objective uses the same):
``x_t = (1 - t) * x0 + t * x1`` with x0 ~ N(0, I) noise at t = 0 and x1 the data at t = 1; the
velocity target is ``x1 - x0``; sampling integrates dx/dt = v from t = 0 to t = 1. The network
sees ``t`` itself (in [0, 1]) as its timestep input, with no rescaling, so an exported velocity
graph takes the same ``t`` that the sampler passes.

Diffusion matches Diffusion Policy's setting: 100 train steps, ``squaredcos_cap_v2`` betas,
epsilon prediction, predicted x0 clipped to [-1, 1], DDPM's "fixed_small" posterior variance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

StepFn = Callable[[np.ndarray, float], np.ndarray]

N_TRAIN_STEPS = 100  # Diffusion Policy's Push-T setting


@dataclass(frozen=True)
class DDPMSchedule:
    betas: np.ndarray  # float64 [n_train]
    alphas_cumprod: np.ndarray  # float64 [n_train], alpha-bar_t

    @property
    def n_train(self) -> int:
        return len(self.betas)


def _alpha_bar(s: float) -> float:
    # the cosine schedule of Nichol & Dhariwal (2021), offset 0.008, as diffusers' squaredcos_cap_v2
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def ddpm_schedule(n_train: int = N_TRAIN_STEPS, max_beta: float = 0.999) -> DDPMSchedule:
    """``squaredcos_cap_v2``: beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta)."""
    if n_train < 1:
        raise ValueError(f"n_train must be positive, got {n_train}")
    betas = np.array([min(1.0 - _alpha_bar((i + 1) / n_train) / _alpha_bar(i / n_train), max_beta)
                      for i in range(n_train)], dtype=np.float64)
    return DDPMSchedule(betas=betas, alphas_cumprod=np.cumprod(1.0 - betas))


def _predict_x0(x: np.ndarray, eps: np.ndarray, abar: float, clip: bool) -> np.ndarray:
    x0 = (x - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)
    return np.clip(x0, -1.0, 1.0) if clip else x0


def sample_ddpm(step_fn: StepFn, x_T: np.ndarray, schedule: DDPMSchedule, rng: np.random.Generator,
                clip: bool = True) -> np.ndarray:
    """Ancestral DDPM sampling over all ``schedule.n_train`` steps (100 for the baseline)."""
    x = np.asarray(x_T, dtype=np.float32)
    ac = schedule.alphas_cumprod
    for t in range(schedule.n_train - 1, -1, -1):
        eps = np.asarray(step_fn(x, float(t)), dtype=np.float32)
        abar, abar_prev = float(ac[t]), float(ac[t - 1]) if t > 0 else 1.0
        alpha_t = abar / abar_prev
        beta_t = 1.0 - alpha_t
        x0 = _predict_x0(x, eps, abar, clip)
        # posterior mean of q(x_{t-1} | x_t, x0)
        mean = ((math.sqrt(abar_prev) * beta_t / (1.0 - abar)) * x0
                + (math.sqrt(alpha_t) * (1.0 - abar_prev) / (1.0 - abar)) * x)
        if t > 0:
            var = max((1.0 - abar_prev) / (1.0 - abar) * beta_t, 1e-20)  # "fixed_small"
            mean = mean + math.sqrt(var) * rng.standard_normal(x.shape)
        x = mean.astype(np.float32)
    return x


def ddim_timesteps(n_train: int, steps: int) -> np.ndarray:
    """Descending timesteps, "trailing" spacing: starts at n_train-1 (pure noise), e.g. 99, 89, ..., 9.

    (diffusers' default "leading" spacing would start at 90 and never see the noisiest steps.)
    """
    if not 1 <= steps <= n_train:
        raise ValueError(f"DDIM steps must be in 1..{n_train}, got {steps}")
    return (np.round(np.arange(n_train, 0, -n_train / steps)) - 1).astype(np.int64)


def sample_ddim(step_fn: StepFn, x_T: np.ndarray, schedule: DDPMSchedule, steps: int = 10,
                clip: bool = True) -> np.ndarray:
    """Deterministic DDIM (eta = 0) in ``steps`` model calls; alpha-bar before step 0 is 1."""
    x = np.asarray(x_T, dtype=np.float32)
    ac = schedule.alphas_cumprod
    ts = ddim_timesteps(schedule.n_train, steps)
    for i, t in enumerate(ts):
        eps = np.asarray(step_fn(x, float(t)), dtype=np.float32)
        abar = float(ac[t])
        abar_prev = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        x0 = _predict_x0(x, eps, abar, clip)
        if clip:  # keep epsilon consistent with the clipped x0, as diffusers does
            eps = (x - math.sqrt(abar) * x0) / math.sqrt(1.0 - abar)
        x = (math.sqrt(abar_prev) * x0 + math.sqrt(1.0 - abar_prev) * eps).astype(np.float32)
    return x


def sample_euler(step_fn: StepFn, x0: np.ndarray, steps: int = 1) -> np.ndarray:
    """Flow matching: integrate dx/dt = v(x, t) from t = 0 (noise x0) to t = 1 in ``steps`` Euler steps."""
    if steps < 1:
        raise ValueError(f"Euler steps must be positive, got {steps}")
    x = np.asarray(x0, dtype=np.float32)
    dt = 1.0 / steps
    for i in range(steps):
        v = np.asarray(step_fn(x, i * dt), dtype=np.float32)
        x = (x + dt * v).astype(np.float32)
    return x
