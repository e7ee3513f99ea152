"""Observation history of the last To frames, padded at episode start by repeating the first frame."""
from __future__ import annotations

from collections import deque

import numpy as np


class ObservationHistory:
    """As Diffusion Policy: before To frames exist, the first observation stands in for the missing ones."""

    def __init__(self, obs_horizon: int):
        if obs_horizon < 1:
            raise ValueError(f"obs_horizon must be >= 1, got {obs_horizon}")
        self.obs_horizon = obs_horizon
        self._states: deque[np.ndarray] = deque(maxlen=obs_horizon)
        self._images: deque[np.ndarray | None] = deque(maxlen=obs_horizon)

    def reset(self, state: np.ndarray, image: np.ndarray | None = None) -> None:
        self._states.clear()
        self._images.clear()
        for _ in range(self.obs_horizon):
            self.push(state, image)

    def push(self, state: np.ndarray, image: np.ndarray | None = None) -> None:
        self._states.append(np.asarray(state, dtype=np.float32))
        self._images.append(image)

    def state(self) -> np.ndarray:
        """[To, Ds] float32, oldest first."""
        return np.stack(self._states)

    def image(self) -> np.ndarray | None:
        """[To, 3, H, W] uint8, oldest first, or None for a state-only policy."""
        return None if self._images[-1] is None else np.stack(self._images)
