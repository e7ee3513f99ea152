"""Open-loop replay of a demonstration in gym-pusht: does the simulator agree with the dataset?"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.evaluate.env import make_env, reset_to_state


@dataclass
class ReplayResult:
    episode: int
    steps: int
    agent_err_px: np.ndarray  # [steps] distance of the simulated agent from the recorded one
    block_err_px: np.ndarray  # [steps] same for the block position
    angle_err_rad: np.ndarray  # [steps] wrapped angle difference

    @property
    def agent_max(self) -> float:
        return float(self.agent_err_px.max()) if self.steps else 0.0

    @property
    def block_max(self) -> float:
        return float(self.block_err_px.max()) if self.steps else 0.0

    @property
    def angle_max(self) -> float:
        return float(self.angle_err_rad.max()) if self.steps else 0.0


def replay_demo(states: np.ndarray, actions: np.ndarray, episode: int = -1, steps: int | None = None,
                env=None) -> ReplayResult:
    """Set the recorded initial state, run the recorded actions open loop, compare with the recording.

    ``states`` [T, 5] and ``actions`` [T, 2] of one episode; state t+1 is compared with the
    simulated state after action t.
    """
    own = env is None
    env = env or make_env()
    try:
        n = len(states) - 1 if steps is None else min(steps, len(states) - 1)
        reset_to_state(env, states[0])
        sim = np.empty((n, 5))
        for t in range(n):
            obs, *_ = env.step(np.asarray(actions[t], dtype=np.float64))
            sim[t] = obs
    finally:
        if own:
            env.close()
    rec = np.asarray(states[1:n + 1], dtype=np.float64)
    ang = np.abs((sim[:, 4] - rec[:, 4] + np.pi) % (2 * np.pi) - np.pi)
    return ReplayResult(episode=episode, steps=n, agent_err_px=np.linalg.norm(sim[:, :2] - rec[:, :2], axis=1),
                        block_err_px=np.linalg.norm(sim[:, 2:4] - rec[:, 2:4], axis=1), angle_err_rad=ang)
