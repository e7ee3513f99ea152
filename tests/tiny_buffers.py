"""Tiny replay buffers written by the tests themselves. A module of its own, not conftest.py: the
HIL suite has a conftest too (its --device option), and `from conftest import ...` would find whichever
of the two pytest imported first."""
from __future__ import annotations

import numpy as np


def make_tiny_buffer(path, n_episodes: int = 6, seed: int = 0, with_image: bool = False,
                     lengths: list[int] | None = None):
    """A Push-T-shaped replay buffer (5-D state, 2-D action) with smooth random trajectories."""
    from trainer.data import write_replay_buffer

    rng = np.random.default_rng(seed)
    lengths = lengths or [int(rng.integers(20, 40)) for _ in range(n_episodes)]
    states, actions = [], []
    for n in lengths:
        t = np.linspace(0, 1, n)[:, None]
        start, end = rng.uniform(50, 450, size=(2, 2))
        agent = start + (end - start) * t
        block = np.repeat(rng.uniform(100, 400, size=(1, 2)), n, 0)
        angle = np.full((n, 1), rng.uniform(0, 2 * np.pi))
        states.append(np.concatenate([agent, block, angle], 1))
        actions.append(agent + rng.normal(0, 2.0, size=agent.shape))
    data = {"state": np.concatenate(states).astype(np.float32), "action": np.concatenate(actions).astype(np.float32)}
    if with_image:
        data["img"] = rng.uniform(0, 255, size=(sum(lengths), 96, 96, 3)).astype(np.float32)
    write_replay_buffer(path, data, np.cumsum(lengths))
    return data, np.cumsum(lengths)
