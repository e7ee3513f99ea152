"""A generic N-joint robot: per joint a position servo with velocity and acceleration limits, command
latency and seeded measurement noise. numpy only, so it runs on the `robot` install (no gym-pusht)."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ...protocol import MAX_PAYLOAD, Capabilities
from .layout import JointLayout, LayoutError, check_limits

# Defaults for what a package or task file does not say about the robot's dynamics (the emulator
# logs the values it uses): full range in 2 s, full speed in 0.25 s.
DEFAULT_SPEED_RANGES_PER_S = 0.5
DEFAULT_ACCEL_S = 0.25
DEFAULT_PERIOD_S = 0.1
START_MARGIN = 0.1  # a seeded start stays this fraction of the range away from the limits


@dataclass
class JointPlantConfig:
    joint_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_velocity: Optional[tuple[float, ...]] = None  # units/s; None: DEFAULT_SPEED_RANGES_PER_S x range
    max_accel: Optional[tuple[float, ...]] = None     # units/s^2; None: max_velocity / DEFAULT_ACCEL_S
    max_step: Optional[tuple[float, ...]] = None      # per command; None: 2 x max_velocity x control period
    latency_s: float = 0.0                            # a command takes effect this long after it arrives
    noise: Optional[tuple[float, ...]] = None         # measurement noise (std) per joint; None: none
    control_dt: float = DEFAULT_PERIOD_S              # lock-step: simulated time per command
    physics_dt: float = 0.005
    seed: int = 0                                     # start pose and noise
    source: str = "options"

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        check_limits(self.joint_names, self.lower, self.upper, self.source)
        span = np.asarray(self.upper, np.float64) - np.asarray(self.lower, np.float64)
        vel = self._per_joint("max_velocity", self.max_velocity, span * DEFAULT_SPEED_RANGES_PER_S, positive=True)
        acc = self._per_joint("max_accel", self.max_accel, np.asarray(vel) / DEFAULT_ACCEL_S, positive=True)
        step = self._per_joint("max_step", self.max_step, 2.0 * np.asarray(vel) * self.control_dt, positive=False)
        noise = self._per_joint("noise", self.noise, np.zeros(n), positive=False)
        self.max_velocity, self.max_accel, self.max_step, self.noise = vel, acc, step, noise
        for name, value, hi in (("latency_s", self.latency_s, 10.0), ("control_dt", self.control_dt, 60.0),
                                ("physics_dt", self.physics_dt, 0.1)):
            lo_ok = value >= 0 if name == "latency_s" else value > 0
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo_ok and value <= hi):
                raise LayoutError(f"{self.source}: {name} must be a finite number in "
                                  f"{'[0' if name == 'latency_s' else '(0'}, {hi:g}], got {value}")
        if self.physics_dt > self.control_dt:
            raise LayoutError(f"{self.source}: physics_dt {self.physics_dt} must not exceed control_dt "
                              f"{self.control_dt}")
        fw = Capabilities("x" * 40, self.joint_names, self.lower, self.upper, vel, (), max_step=step)
        size = len(fw.encode_payload())
        if size > MAX_PAYLOAD:
            raise LayoutError(f"{self.source}: {n} joints with these names need a {size}-byte Capabilities "
                              f"payload; the protocol's limit is {MAX_PAYLOAD} (fewer joints or shorter names)")

    def _per_joint(self, name: str, value: Optional[Sequence[float]], default: np.ndarray,
                   positive: bool) -> tuple[float, ...]:
        """One value per joint: None (the default), a single value for all joints, or n values."""
        n = len(self.joint_names)
        if value is None:
            return tuple(float(v) for v in default)
        values = tuple(float(v) for v in value)
        if len(values) == 1:
            values = values * n
        if len(values) != n:
            raise LayoutError(f"{self.source}: {name} needs 1 or {n} values, got {len(values)}")
        for joint, v in zip(self.joint_names, values):
            if not math.isfinite(v) or v < 0 or (positive and v == 0):
                raise LayoutError(f"{self.source}: {name} of joint {joint} must be a finite number "
                                  f"{'> 0' if positive else '>= 0'}, got {v}")
        return values

    @classmethod
    def from_layout(cls, layout: JointLayout, **options: object) -> "JointPlantConfig":
        """The joints (and limits, period) of a package or task; `options` override or complete them.
        Refuses observations that are not joints: this plant has nothing else to report."""
        unserved = layout.unserved()
        if unserved:
            raise LayoutError(f"{layout.source}: observations {', '.join(unserved)} are not joints "
                              f"({', '.join(layout.joint_names)}); the joints plant cannot serve them")
        if layout.images:
            raise LayoutError(f"{layout.source}: the policy observes images ({', '.join(layout.images)}); "
                              f"the joints plant has no camera")
        if layout.success_signal is not None and layout.success_signal not in layout.joint_names:
            raise LayoutError(f"{layout.source}: success signal {layout.success_signal!r} is not a joint "
                              f"({', '.join(layout.joint_names)}); the joints plant cannot report it")
        lower = options.pop("lower", None) or layout.lower
        upper = options.pop("upper", None) or layout.upper
        if lower is None or upper is None:
            raise LayoutError(f"{layout.source}: no joint limits (action low/high); give them with --lower/--upper")
        n = len(layout.joint_names)
        lower, upper = (tuple(v) * n if len(tuple(v)) == 1 else tuple(v) for v in (lower, upper))
        if options.get("control_dt") is None:
            options["control_dt"] = layout.period_s or DEFAULT_PERIOD_S
        options = {k: v for k, v in options.items() if v is not None}
        return cls(layout.joint_names, lower, upper, source=layout.source, **options)  # type: ignore[arg-type]


class JointPlant:
    """N independent position servos. The servo law: move towards the target at the speed from which it
    can still stop within the acceleration limit (min(v_max, sqrt(2 a_max |error|))), changing velocity by
    at most a_max per second; positions stop hard at the limits."""

    kind = "joints"
    extra_names: tuple[str, ...] = ()

    def __init__(self, config: JointPlantConfig) -> None:
        self.config = config
        self.joint_names = tuple(config.joint_names)
        n = len(self.joint_names)
        self._lower = np.asarray(config.lower, np.float64)
        self._upper = np.asarray(config.upper, np.float64)
        self._vmax = np.asarray(config.max_velocity, np.float64)
        self._amax = np.asarray(config.max_accel, np.float64)
        self._noise = np.asarray(config.noise, np.float64)
        self.pos = np.zeros(n)
        self.vel = np.zeros(n)
        self.t = 0.0                                   # simulated time (for the latency queue)
        self._pending: deque[tuple[float, np.ndarray]] = deque()  # (time it takes effect, target)
        self._last_cmd: Optional[np.ndarray] = None
        self.effective = np.zeros(n)                   # the target the servos follow now
        self._rng = np.random.default_rng(config.seed)
        self.reset(config.seed)

    lower = property(lambda self: self._lower.astype(np.float32))
    upper = property(lambda self: self._upper.astype(np.float32))
    max_velocity = property(lambda self: self._vmax.astype(np.float32))
    max_step = property(lambda self: np.asarray(self.config.max_step, np.float32))
    control_dt = property(lambda self: float(self.config.control_dt))
    physics_dt = property(lambda self: float(self.config.physics_dt))

    def reset(self, seed: Optional[int], state: Optional[Sequence[float]] = None) -> None:
        """Seeded random start inside the limits (a margin away from them), or the given joint positions."""
        n = len(self.joint_names)
        if seed is not None:
            self._rng = np.random.default_rng([self.config.seed & 0xFFFFFFFF, seed & 0xFFFFFFFF])
        if state is not None and len(state) > 0:
            values = np.asarray(state, np.float64).reshape(-1)
            if len(values) != n:
                raise ValueError(f"initial state needs {n} joint positions ({', '.join(self.joint_names)}), "
                                 f"got {len(values)}")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"initial state must be finite, got {values.tolist()}")
            outside = (values < self._lower) | (values > self._upper)
            if outside.any():
                j = int(np.argmax(outside))
                raise ValueError(f"initial state joint {self.joint_names[j]} = {values[j]:g} is outside "
                                 f"[{self._lower[j]:g}, {self._upper[j]:g}]")
            self.pos = values.copy()
        else:
            margin = START_MARGIN * (self._upper - self._lower)
            self.pos = self._rng.uniform(self._lower + margin, self._upper - margin)
        self.vel = np.zeros(n)
        self.t = 0.0
        self._pending.clear()
        self._last_cmd = None
        self.effective = self.pos.copy()

    def positions(self) -> np.ndarray:
        measured = self.pos
        if self._noise.any():
            measured = self.pos + self._rng.normal(0.0, 1.0, len(self.pos)) * self._noise
        return measured.astype(np.float32)

    def extras(self) -> np.ndarray:
        return np.zeros(0, np.float32)

    def _command(self, target: np.ndarray) -> None:
        """A new target enters the latency queue (the same target again is no new command)."""
        target = np.asarray(target, np.float64)
        if self._last_cmd is None or not np.array_equal(target, self._last_cmd):
            self._last_cmd = target.copy()
            if self.config.latency_s <= 0:
                self.effective = target.copy()
                self._pending.clear()
            else:
                self._pending.append((self.t + self.config.latency_s, target.copy()))
        while self._pending and self._pending[0][0] <= self.t + 1e-12:
            self.effective = self._pending.popleft()[1]

    def substep(self, target: np.ndarray) -> None:
        self._command(target)
        self._integrate(self.physics_dt)

    def control_step(self, target: np.ndarray) -> None:
        steps = max(1, int(round(self.control_dt / self.physics_dt)))
        for _ in range(steps):
            self.substep(target)

    def _integrate(self, dt: float) -> None:
        """One step of semi-implicit Euler (velocity first, then position with the new velocity), so the
        velocity and acceleration seen in the positions never exceed the limits."""
        error = self.effective - self.pos
        adt = self._amax * dt
        # The speed from which the servo can still stop at the target, decelerating by a_max*dt per
        # step: k steps of braking cover a*dt^2*k(k+1)/2.
        k = 0.5 * (np.sqrt(1.0 + 8.0 * np.abs(error) / (adt * dt)) - 1.0)
        v_want = np.sign(error) * np.minimum(self._vmax, k * adt)
        v_new = self.vel + np.clip(v_want - self.vel, -adt, adt)
        # Land exactly on the target when that is within reach this step (no dithering around it).
        land = (np.abs(v_new * dt) >= np.abs(error)) & (np.abs(error / dt - self.vel) <= adt)
        v_new = np.where(land, error / dt, v_new)
        self.pos = np.where(land, self.effective, self.pos + v_new * dt)
        self.vel = v_new  # the velocity of this step, whatever the next target (a landing brakes next step)
        stopped = (self.pos <= self._lower) | (self.pos >= self._upper)
        if stopped.any():  # a hard stop: at the limit, no velocity
            self.pos = np.clip(self.pos, self._lower, self._upper)
            self.vel = np.where(stopped, 0.0, self.vel)
        self.t += dt

    def brake(self) -> np.ndarray:
        self.vel = np.zeros_like(self.vel)
        self._pending.clear()
        self._last_cmd = None
        self.effective = self.pos.copy()
        return self.pos.copy()
