"""Move to start: before an episode is recorded, drive the robot to the episode's start pose.

A real arm cannot be reset to a pose in one message the way a simulated plant can, so each episode
starts with a slow joint-space move through the same Robot interface the recording uses: a smooth
(smoothstep) ramp from where the robot stands to the start, every joint arriving together, no joint
faster than `speed` and no command step larger than 90% of the recording's own step limit, every
command through the recorder's safety filter (the robot's box, never widened). Nothing of the move is
recorded. The move ends when every joint is within `tolerance` of the start; if the robot is not
there `timeout_s` after the ramp ended, the move is abandoned with one line naming the joint furthest
off. A start pose outside the robot's limits is refused before anything moves.

    start(task, seed) -> start pose        # imle-record --start MODULE:FUNCTION, in the task's action order
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from runtime.safety import SafetyLimits


class StartError(ValueError):
    """A start pose that cannot be used (outside the robot's limits, malformed): one line."""


@dataclass(frozen=True)
class MoveToStartConfig:
    speed: float = 0.25         # largest joint speed of the move (robot units/s: rad/s on an arm)
    tolerance: float = 0.01     # every joint within this of the start pose ends the move
    timeout_s: float = 5.0      # after the ramp, this long to get within tolerance, else abandon

    def check(self) -> None:
        for name, value in (("speed", self.speed), ("tolerance", self.tolerance), ("timeout_s", self.timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise StartError(f"move to start: {name} must be a finite number > 0, got {value}")


@dataclass
class MoveResult:
    reached: bool
    ticks: int                 # commands sent
    error: float               # largest |position - start| at the end
    reason: str = ""           # why not reached (one line)


def start_pose(function: Callable[[Any, int], Any], task: Any, seed: int, dim: int) -> np.ndarray:
    """Call the start function and check what it returned: `dim` finite numbers (StartError otherwise)."""
    try:
        value = function(task, seed)
    except Exception as exc:
        raise StartError(f"the start function failed for seed {seed}: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]}") from None
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise StartError(f"the start function returned {' '.join(repr(value).split())[:60]} for seed {seed}; "
                         f"expected {dim} numbers") from None
    if arr.size != dim:
        raise StartError(f"the start function returned {arr.size} values for seed {seed}; the task's action has {dim}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise StartError(f"the start function returned a non-finite value ({arr[bad[0]]}) at index {bad[0]} "
                         f"for seed {seed}")
    return arr


def check_start(start: np.ndarray, limits: SafetyLimits) -> None:
    """Refuse a start pose (robot joint order) outside the recording's box: joint, value and both bounds."""
    start = np.asarray(start, np.float64).reshape(-1)
    if start.size != limits.lower.size:
        raise StartError(f"start pose has {start.size} joints; the robot has {limits.lower.size}")
    for i, v in enumerate(start):
        lo, hi = float(limits.lower[i]), float(limits.upper[i])
        if not (lo <= v <= hi):
            name = limits.names[i] if i < len(limits.names) else f"joint {i}"
            raise StartError(f"start pose {name} = {v:.6g} is outside the robot's limits [{lo:.6g}, {hi:.6g}]")


def plan_move(current: np.ndarray, start: np.ndarray, period_s: float, speed: float,
              max_step: np.ndarray) -> np.ndarray:
    """Targets [N, J] from `current` to `start` along a smoothstep ramp (zero speed at both ends, all
    joints together). Its largest per-command step (1.5 x the mean for smoothstep) stays within
    speed x period and 90% of max_step for every joint; the last row is exactly `start`."""
    current = np.asarray(current, np.float64).reshape(-1)
    start = np.asarray(start, np.float64).reshape(-1)
    dist = np.abs(start - current)
    cap = np.minimum(speed * period_s, 0.9 * np.asarray(max_step, np.float64))
    n = int(max(1, np.ceil(np.max(1.5 * dist / cap)))) if np.any(dist > 0) else 1
    t = np.arange(1, n + 1) / n
    s = 3 * t ** 2 - 2 * t ** 3
    path = current + s[:, None] * (start - current)
    path[-1] = start
    return path


def furthest(positions: np.ndarray, start: np.ndarray, names: tuple[str, ...]) -> tuple[str, float, float, float]:
    """(joint name, position, start, |error|) of the joint furthest from the start."""
    err = np.abs(np.asarray(positions, np.float64) - start)
    i = int(np.argmax(err))
    name = names[i] if i < len(names) else f"joint {i}"
    return name, float(positions[i]), float(start[i]), float(err[i])


def not_reached_line(positions: Optional[np.ndarray], start: np.ndarray, names: tuple[str, ...],
                     waited_s: float, tolerance: float) -> str:
    if positions is None:
        return f"move to start: no State from the robot within {waited_s:.1f} s"
    name, pos, target, err = furthest(positions, start, names)
    return (f"move to start: the robot did not reach the start pose within {waited_s:.1f} s: {name} is at "
            f"{pos:.4f}, start {target:.4f} (off by {err:.4f}; tolerance {tolerance:g})")


__all__ = ["MoveResult", "MoveToStartConfig", "StartError", "check_start", "furthest", "not_reached_line",
           "plan_move", "start_pose"]
