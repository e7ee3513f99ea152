"""How far inside the arm's limits the bridge commands: SafetyConfig (scales, margins, watchdog) and
the CommandLimits the rate limiter enforces, derived from an arm and a SafetyConfig."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .arms import ArmLimits


@dataclass(frozen=True)
class SafetyConfig:
    """How far inside the arm's limits the bridge commands. Scales multiply the datasheet values."""
    velocity_scale: float = 0.5
    acceleration_scale: float = 0.3
    jerk_scale: float = 0.3
    position_margin: float = 0.02    # rad inside each joint limit; targets beyond are clamped
    approach_gain: float = 40.0      # 1/s: commanded speed <= gain * distance (no overshoot near the target)
    braking_fraction: float = 0.8    # of the acceleration limit, used to plan stopping at the target
    envelope_margin: float = 0.05    # rad/s inside the FR3 position-dependent velocity envelope
    stop_scale: float = 0.7          # e-stop / watchdog deceleration: this fraction of the arm's full limits
    watchdog_s: float = 0.5          # no command for this long -> decelerate and hold (0 = off)

    def __post_init__(self) -> None:
        for name in ("velocity_scale", "acceleration_scale", "jerk_scale", "stop_scale"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"SafetyConfig.{name} must be in (0, 1], got {value}")
        if not 0.0 < self.braking_fraction <= 0.9:
            raise ValueError(f"SafetyConfig.braking_fraction must be in (0, 0.9], got {self.braking_fraction}")
        if self.position_margin < 0 or self.approach_gain <= 0 or self.watchdog_s < 0:
            raise ValueError("SafetyConfig: position_margin and watchdog_s must be >= 0, approach_gain > 0")


@dataclass(frozen=True)
class CommandLimits:
    """The limits the rate limiter enforces on the commanded joint signal (numpy arrays, per joint)."""
    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray
    max_jerk: np.ndarray
    approach_gain: float = 40.0
    braking_fraction: float = 0.8
    # Velocity envelope near the stops (FR3); None = constant max_velocity only.
    env_offset: Optional[np.ndarray] = None
    env_decel: Optional[np.ndarray] = None
    env_lower: Optional[np.ndarray] = None
    env_upper: Optional[np.ndarray] = None
    env_margin: float = 0.05

    @classmethod
    def from_arm(cls, arm: ArmLimits, safety: SafetyConfig = SafetyConfig()) -> "CommandLimits":
        a = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
        lower, upper = a(arm.lower) + safety.position_margin, a(arm.upper) - safety.position_margin
        if np.any(lower >= upper):
            raise ValueError(f"position_margin {safety.position_margin} leaves no joint range")
        has_env = arm.velocity_offset is not None and arm.deceleration is not None
        return cls(
            lower=lower, upper=upper,
            # never the datasheet value itself: the FCI checks against it minus a tolerance
            max_velocity=np.minimum(a(arm.max_velocity) * safety.velocity_scale, a(arm.max_velocity) - 0.01),
            max_acceleration=a(arm.max_acceleration) * safety.acceleration_scale,
            max_jerk=a(arm.max_jerk) * safety.jerk_scale,
            approach_gain=safety.approach_gain, braking_fraction=safety.braking_fraction,
            env_offset=a(arm.velocity_offset) if has_env else None,
            env_decel=a(arm.deceleration) if has_env else None,
            env_lower=a(arm.urdf_lower or arm.lower) if has_env else None,
            env_upper=a(arm.urdf_upper or arm.upper) if has_env else None,
            env_margin=safety.envelope_margin,
        )

    def for_stopping(self, arm: ArmLimits, stop_scale: float = 0.7) -> "CommandLimits":
        """The same, with stop_scale x the arm's acceleration and jerk limits (e-stop, watchdog hold):
        stop fast, but keep a margin for a cycle the arm had to extrapolate."""
        return replace(self, max_acceleration=np.asarray(arm.max_acceleration, np.float64) * stop_scale,
                       max_jerk=np.asarray(arm.max_jerk, np.float64) * stop_scale)
