"""Scripted demonstrations for the franka-reach-around task (trainer/tasks/franka-reach-around.toml).

The arm starts with joint 1 (base) on the negative side and must reach a goal configuration on the
positive side. On the way lies an avoid box in (joint 1, joint 2): the shoulder (joint 2) passes it
either above ("over") or below ("under"). The planner picks a side at random (50/50, so the two modes are
equally likely from the same start) and varies what a person would: via-points (clearance, where the
detour starts and ends, the other joints' path), speed and its ease-in/out, and corner smoothing.

    imle-record --task franka-reach-around --source scripted:trainer.demos.franka_reach:reach ...
    imle-record ... --source scripted:trainer.demos.franka_reach:reach --start trainer.demos.franka_reach:start
    (the robot is driven to start_for_seed(seed) before each episode; benchmarks/arm_task.py records
    the emulator set through imle-record's Recorder with the same starts)

numpy only. The geometry (REACH_AROUND) is the task's: the evaluation judges episodes with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

MODES = ("over", "under")


@dataclass(frozen=True)
class ReachAroundGeometry:
    goal: tuple[float, ...]                 # rad, 7 joints
    tolerance: float                        # rad, every joint within this of the goal
    avoid_joints: tuple[int, int]           # the two joints the avoid box constrains
    avoid_low: tuple[float, float]          # the box in those two joints (other joints: anything)
    avoid_high: tuple[float, float]
    start_low: tuple[float, ...]            # starts are uniform in this box (7 joints)
    start_high: tuple[float, ...]

    @property
    def mode_split(self) -> float:
        """Joint-2 value that separates the modes: the avoid box's middle."""
        return 0.5 * (self.avoid_low[1] + self.avoid_high[1])


REACH_AROUND = ReachAroundGeometry(
    goal=(1.0, -0.1, 0.3, -2.0, 0.2, 2.2, 0.9),
    tolerance=0.05,
    avoid_joints=(0, 1),
    avoid_low=(-0.3, -0.55),
    avoid_high=(0.3, 0.35),
    start_low=(-1.2, -0.45, -0.4, -2.5, -0.4, 1.7, 0.3),
    start_high=(-0.8, 0.25, 0.0, -2.1, 0.0, 2.1, 0.7),
)

TRAIN_SEEDS = (1000, 100_000)    # recorded demonstrations use seeds from here ...
EVAL_SEED_BASE = 900_000         # ... closed-loop evaluation from here: starts the training never saw


def start_for_seed(seed: int, geom: ReachAroundGeometry = REACH_AROUND) -> np.ndarray:
    """The start configuration of episode `seed` (float32 [7]); the same seed always gives the same start."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED])
    return rng.uniform(geom.start_low, geom.start_high).astype(np.float32)


def _chaikin(points: np.ndarray, iterations: int) -> np.ndarray:
    """Corner cutting (keeps the end points): each corner is replaced by points 1/4 and 3/4 along its edges."""
    for _ in range(iterations):
        a, b = points[:-1], points[1:]
        cut = np.empty((2 * len(a), points.shape[1]))
        cut[0::2], cut[1::2] = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        points = np.vstack([points[:1], cut[1:-1], points[-1:]])
    return points


def plan_path(start: np.ndarray, mode: str, rng: np.random.Generator,
              geom: ReachAroundGeometry = REACH_AROUND) -> np.ndarray:
    """Via-points start -> before the box -> past the box -> goal on the `mode` side, smoothed: [K, 7]."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    start = np.asarray(start, np.float64)
    goal = np.asarray(geom.goal, np.float64)
    j1, j2 = geom.avoid_joints
    clearance = rng.uniform(0.15, 0.35)
    side = geom.avoid_high[1] + clearance if mode == "over" else geom.avoid_low[1] - clearance
    vias = [start]
    for frac, j1_value in ((rng.uniform(0.3, 0.45), geom.avoid_low[0] - rng.uniform(0.15, 0.3)),
                           (rng.uniform(0.55, 0.7), geom.avoid_high[0] + rng.uniform(0.15, 0.3))):
        p = start + frac * (goal - start) + rng.normal(0.0, 0.04, len(start))  # the other joints wander a bit
        p[j1] = j1_value
        p[j2] = side + rng.normal(0.0, 0.03)
        vias.append(p)
    vias.append(goal)
    return _chaikin(np.asarray(vias), int(rng.integers(2, 4)))


def time_path(path: np.ndarray, period_s: float, speed: float, ease: float) -> np.ndarray:
    """Targets every `period_s` along `path` at `speed` rad/s (Euclidean in joint space), with an
    ease-in/out blend of weight `ease` in [0, 1]: [T, 7] ending exactly on the path's end."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    duration = max(arc[-1] / speed, period_s)
    t = np.arange(1, int(np.ceil(duration / period_s)) + 1) * period_s / duration
    t = np.minimum(t, 1.0)
    s = ((1.0 - ease) * t + ease * (3 * t ** 2 - 2 * t ** 3)) * arc[-1]  # smoothstep: slow start and end
    return np.stack([np.interp(s, arc, path[:, j]) for j in range(path.shape[1])], axis=1)


def demo_targets(start: np.ndarray, seed: int, period_s: float, mode: Optional[str] = None,
                 geom: ReachAroundGeometry = REACH_AROUND) -> tuple[str, np.ndarray]:
    """One demonstration's mode and its joint targets [T, 7] (seeded: the same seed, the same demo)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xDE30])
    chosen = mode if mode is not None else MODES[int(rng.integers(0, 2))]
    path = plan_path(start, chosen, rng, geom)
    return chosen, time_path(path, period_s, speed=rng.uniform(0.45, 0.8), ease=rng.uniform(0.3, 1.0))


def reach(task: Any, seed: int) -> Callable[[Any], Optional[np.ndarray]]:
    """imle-record's scripted source: plans from the first observed state, then streams the targets,
    holds the goal until the arm is there (or 25 more ticks), and says done."""
    geom = REACH_AROUND
    plan: dict[str, Any] = {}

    def act(obs: Any) -> Optional[np.ndarray]:
        if "targets" not in plan:
            _, plan["targets"] = demo_targets(np.asarray(obs.state, np.float64), seed, task.period_s, geom=geom)
            plan["settled"] = 0
        targets = plan["targets"]
        if obs.step < len(targets):
            return targets[obs.step].astype(np.float32)
        at_goal = np.max(np.abs(np.asarray(obs.state, np.float64) - geom.goal)) <= 0.3 * geom.tolerance
        plan["settled"] += 1
        if (at_goal and plan["settled"] > 3) or plan["settled"] > 25:
            return None
        return np.asarray(geom.goal, np.float32)

    return act


def start(task: Any, seed: int) -> np.ndarray:
    """imle-record's start function (`--start trainer.demos.franka_reach:start`): episode `seed` starts at
    start_for_seed(seed); on a real robot (or franka-sim) imle-record drives the arm there first."""
    return start_for_seed(seed)
