"""Success of a joint-space reach-around episode, judged from the arm's measured joint positions.

The Franka reports joints only, so the task cannot name a success signal the robot reports; the
evaluation judges each episode's recorded positions instead:

* success  = every joint within `tolerance` of the goal at some step, and the avoid box never entered
             before that step (after success the episode would have ended);
* mode     = which side of the box joint 2 was on when joint 1 crossed the box's middle ("over" or
             "under"; "none" when joint 1 never crossed it).

Pure numpy; positions are [T, 7] in the task's joint order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from trainer.demos.franka_reach import ReachAroundGeometry


@dataclass(frozen=True)
class ReachVerdict:
    success: bool
    reached_step: Optional[int]   # first step within tolerance (None: never)
    entered_step: Optional[int]   # first step inside the avoid box (None: never)
    mode: str                     # over | under | none
    final_error: float            # max |q - goal| at the last step, rad


def inside_avoid_box(positions: np.ndarray, geom: ReachAroundGeometry) -> np.ndarray:
    """[T] bool: the configuration lies inside the avoid box (boundary included)."""
    q = np.asarray(positions, np.float64)
    a, b = geom.avoid_joints
    return ((q[:, a] >= geom.avoid_low[0]) & (q[:, a] <= geom.avoid_high[0])
            & (q[:, b] >= geom.avoid_low[1]) & (q[:, b] <= geom.avoid_high[1]))


def crossing_mode(positions: np.ndarray, geom: ReachAroundGeometry) -> str:
    """Side of the box at the first crossing of joint 1 over the box's middle (joint 2 interpolated)."""
    q = np.asarray(positions, np.float64)
    a, b = geom.avoid_joints
    mid = 0.5 * (geom.avoid_low[0] + geom.avoid_high[0])
    x = q[:, a] - mid
    for i in range(len(q) - 1):
        if x[i] < 0.0 <= x[i + 1]:
            w = -x[i] / (x[i + 1] - x[i])
            j2 = (1 - w) * q[i, b] + w * q[i + 1, b]
            return "over" if j2 > geom.mode_split else "under"
    return "none"


def judge(positions: np.ndarray, geom: ReachAroundGeometry) -> ReachVerdict:
    """The verdict on one episode's measured positions [T, 7]."""
    q = np.asarray(positions, np.float64)
    if q.ndim != 2 or q.shape[1] != len(geom.goal) or len(q) == 0:
        raise ValueError(f"positions must be [T>0, {len(geom.goal)}], got shape {list(q.shape)}")
    if not np.all(np.isfinite(q)):
        raise ValueError("positions hold non-finite values")
    err = np.max(np.abs(q - np.asarray(geom.goal)), axis=1)
    near = np.flatnonzero(err <= geom.tolerance)
    inside = np.flatnonzero(inside_avoid_box(q, geom))
    reached = int(near[0]) if len(near) else None
    entered = int(inside[0]) if len(inside) else None
    ok = reached is not None and (entered is None or entered > reached)
    upto = q if reached is None else q[:reached + 1]
    return ReachVerdict(ok, reached, entered, crossing_mode(upto, geom), float(err[-1]))
