"""gym-pusht environment: creation with clear errors, correct state setting, observation conversion.

gym-pusht's own ``reset_to_state`` sets the block's position before its angle; pymunk turns a body
about its centre of gravity, which for the T is offset from the body origin, so the block lands up
to ~90 px away from the recorded pose. :func:`set_pusht_state` sets the angle first, then the
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


def set_pusht_state(env, state: np.ndarray) -> None:
    """Put the agent and block at ``state`` = [agent x, agent y, block x, block y, block angle].

    Angle before position: setting the angle rotates the body about its (offset) centre of
    gravity, which would move a position set earlier.
    """
    u = env.unwrapped
    s = np.asarray(state, dtype=np.float64)
    u.agent.position = (float(s[0]), float(s[1]))
    u.agent.velocity = (0.0, 0.0)
    u.block.angle = float(s[4])
    u.block.position = (float(s[2]), float(s[3]))
    u.block.velocity = (0.0, 0.0)
    u.block.angular_velocity = 0.0
    u.space.step(u.dt)  # as gym-pusht's _set_state: let pymunk update the shapes


def reset_to_state(env, state: np.ndarray, seed: int | None = None):
    """``env.reset``, a fresh physics space, then :func:`set_pusht_state`; returns the observation.

    The fresh space matters: ``env.reset`` first places agent and block at a random state and steps
    once, and contacts cached from that step (pymunk warm-starts from them) changed a replay by up
    to 44 px in our measurements.
    """
    env.reset(seed=seed)
    env.unwrapped._setup()  # gym-pusht's own space construction: walls, agent, block, goal
    set_pusht_state(env, state)
    return env.unwrapped.get_obs()


def split_obs(obs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """gym-pusht observation -> (state [Ds] float32, image [3, H, W] uint8 or None).

    ``state`` obs: [agent x, y, block x, y, angle]; ``pixels_agent_pos``: agent x, y and an HWC image.
    """
    if isinstance(obs, dict):
        img = np.ascontiguousarray(np.moveaxis(np.asarray(obs["pixels"], dtype=np.uint8), -1, 0))
        return np.asarray(obs["agent_pos"], dtype=np.float32), img
    return np.asarray(obs, dtype=np.float32), None
