"""The rate-limit maths: a jerk-, acceleration- and velocity-limited approach to a joint target, one
1 ms cycle at a time, inside the FR3's position-dependent velocity envelope. Pure numpy."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .fci import DT
from .safety import CommandLimits


def clamp_target(target: np.ndarray, limits: CommandLimits) -> tuple[np.ndarray, bool]:
    """Clamp a target inside the commanded joint range. Returns (clamped, whether anything changed)."""
    clamped = np.minimum(np.maximum(target, limits.lower), limits.upper)
    return clamped, bool(np.any(clamped != target))


def velocity_envelope(q: np.ndarray, limits: CommandLimits) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) joint velocity allowed at q: max_velocity, narrowed near the stops on an FR3."""
    vmax = limits.max_velocity
    if limits.env_offset is None:
        return -vmax, vmax
    up = -limits.env_offset + np.sqrt(np.maximum(0.0, 2.0 * limits.env_decel * (limits.env_upper - q)))
    lo = limits.env_offset - np.sqrt(np.maximum(0.0, 2.0 * limits.env_decel * (q - limits.env_lower)))
    hi = np.clip(up - limits.env_margin, 0.0, vmax)
    low = np.clip(lo + limits.env_margin, -vmax, 0.0)
    return low, hi


def rate_limit_step(q: np.ndarray, v: np.ndarray, a: np.ndarray, target: Optional[np.ndarray],
                    limits: CommandLimits, dt: float = DT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One control cycle of the commanded joint signal: (q, v, a) -> (q', v', a').

    target=None means stop: bring the velocity to zero as fast as the limits allow, wherever that is.
    Otherwise the desired velocity points at the target with a speed that can still brake to rest
    exactly there (sqrt(2 * braking * distance)), capped by approach_gain * distance near it and by
    max_velocity / the velocity envelope; the acceleration tracks that velocity with gain
    max_jerk / max_acceleration (libfranka's limitRate rule, which keeps room to ramp the
    acceleration back to zero within the jerk limit), clipped to +-max_acceleration and to a
    change of max_jerk * dt per cycle. By construction |v'| <= max_velocity, |a'| <= max_acceleration,
    |a' - a| <= max_jerk * dt, and the commanded position does not overshoot a fixed target.
    """
    amax, jmax = limits.max_acceleration, limits.max_jerk
    if target is None:
        v_des = np.zeros_like(v)
    else:
        error = target - q
        dist = np.abs(error)
        speed = np.minimum(np.minimum(limits.max_velocity, limits.approach_gain * dist),
                           np.sqrt(2.0 * limits.braking_fraction * amax * dist))
        v_des = np.sign(error) * speed
        low, high = velocity_envelope(q, limits)
        v_des = np.minimum(np.maximum(v_des, low), high)
    a_des = np.clip((jmax / amax) * (v_des - v), -amax, amax)
    a_new = np.minimum(np.maximum(a_des, a - jmax * dt), a + jmax * dt)
    v_new = v + a_new * dt
    q_new = q + v_new * dt
    return q_new, v_new, a_new


def late_command_history(q: np.ndarray, q0: np.ndarray, v0: np.ndarray, cycles: int,
                         dt: float = DT) -> tuple[np.ndarray, np.ndarray]:
    """Velocity and acceleration that backward differences give command q taken `cycles` cycles
    after the reference position q0 with velocity v0: how franka-sim records a late command
    (_ControlLoop.follow_arm_reference). One cycle gives the semi-implicit step's own v and a back."""
    step = cycles * dt
    v = (np.asarray(q, np.float64) - q0) / step
    return v, (v - v0) / step


class JointRateLimiter:
    """Stateful wrapper of rate_limit_step: the commanded position, velocity and acceleration."""

    def __init__(self, limits: CommandLimits, stop_limits: Optional[CommandLimits] = None,
                 q0: Optional[Sequence[float]] = None, dt: float = DT):
        self.limits = limits
        self.stop_limits = stop_limits or limits
        self.dt = dt
        n = len(limits.lower)
        self.q = np.zeros(n) if q0 is None else np.array(q0, dtype=np.float64)
        self.v = np.zeros(n)
        self.a = np.zeros(n)

    def reset(self, q0: Sequence[float], v0: Optional[Sequence[float]] = None,
              a0: Optional[Sequence[float]] = None) -> None:
        """Continue from q0 (at rest unless v0 / a0 are given): the arm's last commanded signal."""
        self.q = np.array(q0, dtype=np.float64)
        self.v = np.zeros_like(self.q) if v0 is None else np.array(v0, dtype=np.float64)
        self.a = np.zeros_like(self.q) if a0 is None else np.array(a0, dtype=np.float64)

    def extrapolate(self, cycles: int) -> None:
        """Advance through `cycles` cycles the arm ran without a command from us, as the FCI does:
        the acceleration held, velocity and position integrated (semi-implicit, like `step`)."""
        for _ in range(max(0, cycles)):
            self.v = self.v + self.a * self.dt
            self.q = self.q + self.v * self.dt

    def step(self, target: Optional[np.ndarray], after_gap: bool = False) -> np.ndarray:
        """Advance one cycle toward target (None: stop). Returns the new commanded position.

        after_gap: the first command after lost cycles. A joint that would keep the held acceleration
        a != 0 eases it toward zero by up to one cycle's jerk budget instead, so this command differs
        from the FCI's held-acceleration bridge by ~jerk * dt^3 (1.5e-6 rad at the defaults), which the
        next state's q_d then shows: in time (q_d is ours) or late (q_d is the bridge; see
        _ControlLoop.follow_arm_reference). Easing |a| keeps every bound above."""
        limits = self.limits if target is not None else self.stop_limits
        a_held = self.a
        q, v, a = rate_limit_step(self.q, self.v, a_held, target, limits, self.dt)
        if after_gap:
            budget = limits.max_jerk * self.dt
            same = (np.abs(a - a_held) < 0.5 * budget) & (a_held != 0.0)
            if np.any(same):
                a = np.where(same, a_held - np.sign(a_held) * np.minimum(np.abs(a_held), budget), a)
                v = self.v + a * self.dt
                q = self.q + v * self.dt
        self.q, self.v, self.a = q, v, a
        return self.q

    def at_rest(self, v_eps: float = 1e-4, a_eps: float = 1e-2) -> bool:
        return bool(np.all(np.abs(self.v) < v_eps) and np.all(np.abs(self.a) < a_eps))
