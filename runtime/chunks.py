"""Where "now" is in a planned action chunk, written once for the loop, the schedule and the policy.

A policy plans from the last To observations, the last of which is the present. The chunk it returns
has Tp rows; row To-1 is meant for the tick of that last observation ("now"), row To-1+j for j ticks
later. Executing a plan means executing rows To-1 .. To-1+Ta-1 (as Diffusion Policy and the
trainer's windows define it).
"""
from __future__ import annotations

import numpy as np


def now_row(obs_horizon: int) -> int:
    """The chunk row meant for the tick of the newest observation: To-1."""
    if obs_horizon < 1:
        raise ValueError(f"obs_horizon must be >= 1, got {obs_horizon}")
    return obs_horizon - 1


def executed_rows(chunk: np.ndarray, obs_horizon: int, action_horizon: int) -> np.ndarray:
    """The Ta rows of a chunk executed from now on: chunk[To-1 : To-1+Ta] (a view)."""
    start = now_row(obs_horizon)
    return chunk[start:start + action_horizon]


def rest_rows(chunk: np.ndarray, obs_horizon: int, action_horizon: int) -> np.ndarray:
    """The rows after the executed ones: chunk[To-1+Ta :] (a view), what the next plan should continue."""
    return chunk[now_row(obs_horizon) + action_horizon:]
