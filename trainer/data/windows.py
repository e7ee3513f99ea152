"""Episode subsets and (To, Tp) training windows with edge padding inside each episode."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.replay_buffer import DatasetError, ReplayBuffer


def select_episodes(n_total: int, count: int | None = None, fraction: float | None = None, seed: int = 0) -> np.ndarray:
    """Pick a reproducible subset of episode indices (sorted) by count or fraction.

    The same (n_total, seed) always gives nested subsets: the first k of one fixed permutation,
    so the 10% subset is contained in the 25% subset, as a sample-efficiency study needs.
    """
    if count is not None and fraction is not None:
        raise DatasetError("give either an episode count or a fraction, not both")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise DatasetError(f"episode fraction must be in (0, 1], got {fraction}")
        count = max(1, int(round(fraction * n_total)))
    if count is None:
        count = n_total
    if count <= 0:
        raise DatasetError(f"episode subset is empty (asked for {count} of {n_total} episodes)")
    if count > n_total:
        raise DatasetError(f"asked for {count} episodes but the dataset has only {n_total}")
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[:count])


@dataclass
class WindowIndex:
    """Frame indices for every training window: ``frames[i]`` has Tp flat-buffer indices.

    Windows follow Diffusion Policy: the window may start up to To-1 frames before an episode's
    start and end up to Ta-1 frames after its end; indices outside are clamped to the episode's
    first/last frame (edge padding). Observations are the first To frames of the window, the
    action chunk is all Tp frames.
    """

    frames: np.ndarray  # int64 [n_windows, Tp]
    episodes: np.ndarray  # int64 [n_windows], episode of each window


def build_windows(buffer: ReplayBuffer, episodes: np.ndarray, obs_horizon: int, pred_horizon: int,
                  action_horizon: int) -> WindowIndex:
    if obs_horizon < 1 or pred_horizon < obs_horizon or action_horizon < 1:
        raise DatasetError(f"bad horizons: obs={obs_horizon}, pred={pred_horizon}, action={action_horizon}")
    pad_before, pad_after = obs_horizon - 1, action_horizon - 1
    frames, owners = [], []
    for ep in episodes:
        start, end = buffer.episode_bounds(int(ep))
        length = end - start
        first = -pad_before
        last = length - pred_horizon + pad_after  # inclusive
        if last < first:  # episode shorter than a window: one fully padded window
            last = first
        offsets = np.arange(first, last + 1)[:, None] + np.arange(pred_horizon)[None, :]
        frames.append(start + np.clip(offsets, 0, length - 1))
        owners.append(np.full(len(offsets), ep))
    if not frames:
        raise DatasetError("no episodes selected")
    return WindowIndex(frames=np.concatenate(frames).astype(np.int64), episodes=np.concatenate(owners).astype(np.int64))
