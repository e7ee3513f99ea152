"""A synthetic 7-joint arm's replay buffer: joint1..joint6 plus joint7, a revolute joint that wraps
around (its recorded angle crosses +-pi inside episodes)."""
from __future__ import annotations

import numpy as np


def make_arm7_buffer(path, n_episodes: int = 4, seed: int = 0) -> tuple[dict, np.ndarray]:
    from trainer.data import write_replay_buffer

    rng = np.random.default_rng(seed)
    states, actions, lengths = [], [], []
    for _ in range(n_episodes):
        n = int(rng.integers(20, 30))
        lengths.append(n)
        t = np.linspace(0, 1, n)[:, None]
        a, b = rng.uniform(-1.5, 1.5, size=(2, 6))
        joints = a + (b - a) * t
        wrap = np.angle(np.exp(1j * (3.0 + 1.2 * np.linspace(-1, 1, n))))[:, None]  # ... 3.1, -3.1 ...
        q = np.concatenate([joints, wrap], 1)
        states.append(q)
        actions.append(q + rng.normal(0, 0.01, q.shape))
    data = {"state": np.concatenate(states).astype(np.float32), "action": np.concatenate(actions).astype(np.float32)}
    ends = np.cumsum(lengths)
    write_replay_buffer(path, data, ends)
    return data, ends


def name_arm7_task(text: str, period_s: float = 0.05) -> str:
    """What a user does to the starter file: names, the wrap-around joint, the control period."""
    for i in range(7):
        text = text.replace(f'"state_{i}"', f'"joint{i + 1}"')
        text = text.replace(f'"action_{i}"', f'"target_joint{i + 1}"')
    text = text.replace("angles = []", 'angles = ["joint7"]')
    text = text.replace("period_s = 0.1 ", f"period_s = {period_s} ")
    # the action dimensions command joint1..joint7 (the starter says joints = names)
    start = text.index("joints = [")
    end = text.index("]", start) + 1
    return text[:start] + "joints = [" + ", ".join(f'"joint{i + 1}"' for i in range(7)) + "]" + text[end:]
