"""The emulated plant: gym-pusht's PushTEnv, with the pusher as a 2-joint (x, y) robot.

Lock-step uses env.step() itself (10 Hz control, 100 Hz physics substeps), so a run through the
emulator reproduces an in-process evaluation bit for bit. Real-time runs the same PD substep on the
device's clock.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

JOINT_NAMES = ("agent_x", "agent_y")
EXTRA_NAMES = ("block_x", "block_y", "block_angle", "coverage")
LIMIT_LOW, LIMIT_HIGH = 0.0, 512.0
STATE_DIM = 5  # [agent_x, agent_y, block_x, block_y, block_angle]: gym-pusht's "state" observation
# The largest target change one command may make (px, both joints). From the data: the largest
# per-tick change of data/action in the shared Push-T demos (pusht_cchi_v7_replay.zarr, 206 episodes,
# 25,650 steps at 10 Hz) is 135 px in x and 102 px in y (99.9th percentile 60/52 px, 99th 34/31 px);
# 200 px is ~1.5x the largest, the same for both axes (the pusher is symmetric). The shipped policy's
# largest step is 30 px. benchmarks/protocol_integrity.py and docs/protocol.md section 9 cite this.
MAX_STEP_PX = 200.0
CONTROL_HZ = 10.0
MAX_VELOCITY_PX_S = MAX_STEP_PX * CONTROL_HZ  # 2000 px/s: max_step per 0.1 s control tick


def make_pusht_env():
    """A PushTEnv with obs_type="state", imported lazily (and without pygame's stdout banner)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    from gym_pusht.envs.pusht import PushTEnv
    return PushTEnv(obs_type="state")


def reset_pusht(env, seed: Optional[int], state: Optional[Sequence[float]] = None) -> np.ndarray:
    """env.reset(seed=seed), then optionally place the plant at `state` = [ax, ay, bx, by, angle].

    gym-pusht's reset_to_state sets the block position before its angle; the angle turns the block
    about its offset centre of gravity, so the block lands up to ~90 px off. Here: a fresh physics
    space (env.reset placed the bodies at random and stepped once; pymunk warm-starts from the
    contacts cached then, which changed demo replays by up to 44 px), velocities zeroed, angle
    first, then positions, then one physics step, as the recorded demos were made.
    trainer.evaluate uses this same function, so in-process evaluation and the emulator agree.
    """
    obs, _ = env.reset(seed=seed)
    if state is None or len(state) == 0:
        return obs
    if len(state) != STATE_DIM:
        raise ValueError(f"Push-T initial state needs {STATE_DIM} values, got {len(state)}")
    u = getattr(env, "unwrapped", env)  # a gymnasium wrapper or the bare PushTEnv
    u._setup()  # gym-pusht's own space construction: walls, agent, block, goal
    ax, ay, bx, by, angle = (float(v) for v in state)
    u.agent.velocity = (0.0, 0.0)
    u.block.velocity = (0.0, 0.0)
    u.block.angular_velocity = 0.0
    u.agent.position = (ax, ay)
    u.block.angle = angle
    u.block.position = (bx, by)
    u.space.step(u.dt)
    return u.get_obs()


class PushTPlant:
    """Push-T physics behind the device: joints = pusher (x, y), extras = block pose + coverage."""

    kind = "push-t"
    joint_names = JOINT_NAMES
    extra_names = EXTRA_NAMES

    def __init__(self, seed: int = 0) -> None:
        self.env = make_pusht_env()
        self._coverage: Optional[float] = None
        self.reset(seed)

    @property
    def lower(self) -> np.ndarray:
        return np.full(2, LIMIT_LOW, np.float32)

    @property
    def upper(self) -> np.ndarray:
        return np.full(2, LIMIT_HIGH, np.float32)

    @property
    def max_step(self) -> np.ndarray:
        return np.full(2, MAX_STEP_PX, np.float32)

    @property
    def max_velocity(self) -> np.ndarray:
        return np.full(2, MAX_VELOCITY_PX_S, np.float32)

    @property
    def control_dt(self) -> float:
        return 1.0 / self.env.control_hz  # 0.1 s

    @property
    def physics_dt(self) -> float:
        return self.env.dt  # 0.01 s

    def reset(self, seed: Optional[int], state: Optional[Sequence[float]] = None) -> None:
        """Raises ValueError (the device refuses the Reset) for a state that is not a Push-T state:
        wrong length, non-finite, or the pusher or block outside the workspace."""
        if state is not None and len(state) > 0:
            values = np.asarray(state, np.float64)
            if len(values) != STATE_DIM:
                raise ValueError(f"Push-T initial state needs {STATE_DIM} values, got {len(values)}")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"Push-T initial state must be finite, got {values.tolist()}")
            if np.any(values[:4] < LIMIT_LOW) or np.any(values[:4] > LIMIT_HIGH):
                raise ValueError(f"Push-T initial state positions must be within [{LIMIT_LOW:g}, {LIMIT_HIGH:g}], "
                                 f"got {values[:4].tolist()}")
        reset_pusht(self.env, seed, state)
        self._coverage = None

    def positions(self) -> np.ndarray:
        return np.array(self.env.agent.position, dtype=np.float32)

    def extras(self) -> np.ndarray:
        obs = self.env.get_obs()
        if self._coverage is None:
            self._coverage = float(self.env._get_coverage())
        return np.array([obs[2], obs[3], obs[4], self._coverage], dtype=np.float32)

    def control_step(self, target: np.ndarray) -> None:
        """One gym-pusht control step (exactly env.step; commanded targets arrive as float32, like a policy's)."""
        _, _, _, _, info = self.env.step(np.asarray(target))
        self._coverage = float(info["coverage"])

    def substep(self, target: np.ndarray) -> None:
        """One 100 Hz physics substep with gym-pusht's PD law (the body of env.step's loop)."""
        from pymunk.vec2d import Vec2d
        env = self.env
        action = np.asarray(target)
        acceleration = env.k_p * (action - env.agent.position) + env.k_v * (Vec2d(0, 0) - env.agent.velocity)
        env.agent.velocity += acceleration * env.dt
        env.space.step(env.dt)
        self._coverage = None

    def brake(self) -> np.ndarray:
        """Stop the pusher where it is (watchdog hold / e-stop); returns the exact (float64) hold target."""
        self.env.agent.velocity = (0.0, 0.0)
        return np.array(self.env.agent.position, dtype=np.float64)
