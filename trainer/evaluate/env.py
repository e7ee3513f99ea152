"""gym-pusht environment: creation with clear errors, correct state setting, observation conversion.

gym-pusht's own ``reset_to_state`` sets the block's position before its angle; pymunk turns a body
about its centre of gravity, which for the T is offset from the body origin, so the block lands up
to ~90 px away from the recorded pose. :func:`reset_to_state` builds a fresh space, sets the angle first, then the
position, then steps the space once (as gym-pusht does) so the shapes' caches update.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ENV_ID = "gym_pusht/PushT-v0"
MAX_STEPS = 300  # Diffusion Policy's Push-T episode limit
SIM_EXTRA = "pip install -e '.[sim]'  (gym-pusht, imageio)"


class SimUnavailable(RuntimeError):
    """gym-pusht (or one of its dependencies) is not installed."""


def require_gym_pusht() -> None:
    try:
        import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
        import gymnasium  # noqa: F401
    except ImportError as exc:
        raise SimUnavailable(f"gym-pusht is not installed ({exc.name} missing): {SIM_EXTRA}") from None


def make_env(image_shape: tuple[int, ...] | None = None, max_steps: int = MAX_STEPS, render_size: int = 256):
    """Push-T with state observations, or ``pixels_agent_pos`` for a policy that sees images.

    ``image_shape`` is the package's per-frame (3, H, W); ``render_size`` is the side of
    ``env.render()`` frames (media only; observations use the observation size).
    """
    require_gym_pusht()
    import gymnasium as gym

    kwargs: dict[str, Any] = {"obs_type": "state", "render_mode": "rgb_array",
                              "visualization_width": render_size, "visualization_height": render_size}
    if image_shape is not None:
        _, h, w = image_shape
        kwargs.update(obs_type="pixels_agent_pos", observation_height=h, observation_width=w)
    return gym.make(ENV_ID, max_episode_steps=max_steps, disable_env_checker=True, **kwargs)


def reset_to_state(env, state: np.ndarray, seed: int | None = None):
    """``env.reset`` and place agent and block at ``state`` = [agent x, y, block x, y, angle].

    One implementation with the emulated microcontroller's plant
    (:func:`firmware_bridge.emulator.plant.reset_pusht`: fresh space, angle before position).
    """
    from firmware_bridge.emulator.plant import reset_pusht

    return reset_pusht(env, seed, np.asarray(state, dtype=np.float64))


def split_obs(obs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """gym-pusht observation -> (state [Ds] float32, image [3, H, W] uint8 or None).

    ``state`` obs: [agent x, y, block x, y, angle]; ``pixels_agent_pos``: agent x, y and an HWC image.
    """
    if isinstance(obs, dict):
        img = np.ascontiguousarray(np.moveaxis(np.asarray(obs["pixels"], dtype=np.uint8), -1, 0))
        return np.asarray(obs["agent_pos"], dtype=np.float32), img
    return np.asarray(obs, dtype=np.float32), None
