"""Safety rules between the policy and the robot: position and rate limits, NaN guard, e-stop, link watch.

Every rule fails towards holding: a command that cannot be made safe becomes "hold the last safe
command" (or the current position), and when even that is not known nothing is sent, so the
device's own watchdog holds. Counts of each intervention feed the run statistics.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np


class SafetyConfigError(ValueError):
    """The package and the device disagree in a way that makes safe operation impossible."""


def parse_action_limits(spec: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Manifest action limits -> (lower, upper) float64 arrays; missing bounds become -inf/+inf.

    Accepts {"low"/"lower"/"min": [...], "high"/"upper"/"max": [...]} or [[lo, hi], ...] or None.
    """
    lo = np.full(dim, -np.inf)
    hi = np.full(dim, np.inf)
    if spec is None:
        return lo, hi
    if isinstance(spec, Mapping):
        low = next((spec[k] for k in ("low", "lower", "min") if k in spec), None)
        high = next((spec[k] for k in ("high", "upper", "max") if k in spec), None)
    else:
        pairs = np.asarray(spec, dtype=np.float64)
        if pairs.shape != (dim, 2):
            raise SafetyConfigError(f"action limits must be {dim} [low, high] pairs, got shape {pairs.shape}")
        low, high = pairs[:, 0], pairs[:, 1]
    if low is not None:
        lo = np.broadcast_to(np.asarray(low, dtype=np.float64), (dim,)).copy()
    if high is not None:
        hi = np.broadcast_to(np.asarray(high, dtype=np.float64), (dim,)).copy()
    lo = np.where(np.isnan(lo), -np.inf, lo)
    hi = np.where(np.isnan(hi), np.inf, hi)
    return lo, hi


@dataclass
class SafetyLimits:
    """Per-joint position bounds and the largest change of the commanded target in one tick."""
    lower: np.ndarray
    upper: np.ndarray
    max_step: np.ndarray  # +inf where unlimited

    @classmethod
    def build(cls, action_limits: Any, dim: int, device_lower: Optional[Sequence[float]] = None,
              device_upper: Optional[Sequence[float]] = None, device_max_velocity: Optional[Sequence[float]] = None,
              period_s: float = 0.1, max_velocity: Optional[Sequence[float]] = None) -> "SafetyLimits":
        """Intersect the package's action limits with the device's joint limits and velocity.

        A device max velocity of 0 means "not limited" (protocol convention). `max_velocity` is an
        optional extra cap (e.g. from the manifest), also per second.
        """
        lo, hi = parse_action_limits(action_limits, dim)
        if device_lower is not None:
            lo = np.maximum(lo, _vec(device_lower, dim, "device lower limits"))
        if device_upper is not None:
            hi = np.minimum(hi, _vec(device_upper, dim, "device upper limits"))
        if np.any(lo > hi):
            bad = int(np.argmax(lo > hi))
            raise SafetyConfigError(f"joint {bad}: the package's action range and the device's joint range do "
                                    f"not overlap ([{lo[bad]:g}, {hi[bad]:g}] after intersection)")
        step = np.full(dim, np.inf)
        for vmax in (device_max_velocity, max_velocity):
            if vmax is None:
                continue
            v = _vec(vmax, dim, "max velocity")
            step = np.minimum(step, np.where(v > 0, v * period_s, np.inf))
        return cls(lo, hi, step)


def _vec(values: Sequence[float], dim: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != dim:
        raise SafetyConfigError(f"{what} has {arr.size} values, the policy commands {dim} joints")
    return arr


@dataclass
class SafetyCounts:
    nan_blocked: int = 0
    clipped: int = 0
    rate_limited: int = 0
    estops: int = 0


@dataclass
class FilterResult:
    command: Optional[np.ndarray]  # float32 targets to send; None = send nothing
    held: bool = False             # the command is a hold, not the policy's request
    reason: str = ""               # "", "nan", "estop", "no-reference"


class SafetyFilter:
    """Turns the policy's requested targets into commands that respect the limits.

    Order: e-stop latch -> NaN guard -> rate limit (relative to the last sent command, or the
    current position after reset) -> position clip. Clipping last guarantees the bounds even when
    the reference itself was outside them.
    """

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.counts = SafetyCounts()
        self._last: Optional[np.ndarray] = None
        self._estop = threading.Event()  # set from a signal handler or another thread

    @property
    def last_command(self) -> Optional[np.ndarray]:
        return self._last

    def reset(self) -> None:
        """Forget the last command (new episode, or the link came back): the next is rate-limited
        relative to the current position."""
        self._last = None

    def engage_estop(self) -> None:
        if not self._estop.is_set():
            self.counts.estops += 1
        self._estop.set()

    def release_estop(self) -> None:
        self._estop.clear()

    @property
    def estopped(self) -> bool:
        return self._estop.is_set()

    def hold_target(self, current: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """Where to hold: the last sent command, else the current position clipped to the limits."""
        if self._last is not None:
            return self._last
        if current is None:
            return None
        cur = np.asarray(current, dtype=np.float64).reshape(-1)
        if cur.size != self.limits.lower.size or not np.all(np.isfinite(cur)):
            return None
        return np.clip(cur, self.limits.lower, self.limits.upper).astype(np.float32)

    def hold(self, current: Optional[np.ndarray]) -> FilterResult:
        if self.estopped:
            return FilterResult(None, True, "estop")
        target = self.hold_target(current)
        if target is None:
            return FilterResult(None, True, "no-reference")
        self._last = target
        return FilterResult(target, True)

    def filter(self, requested: Optional[np.ndarray], current: Optional[np.ndarray]) -> FilterResult:
        """The command to send for `requested` (None = no action for this tick: hold)."""
        if self.estopped:
            return FilterResult(None, True, "estop")
        if requested is None:
            return self.hold(current)
        req = np.asarray(requested, dtype=np.float64).reshape(-1)
        if req.size != self.limits.lower.size or not np.all(np.isfinite(req)):
            self.counts.nan_blocked += 1
            res = self.hold(current)
            return FilterResult(res.command, True, "nan" if res.command is not None else res.reason)
        ref = self._last if self._last is not None else self.hold_target(current)
        out = req
        if ref is not None and np.any(np.isfinite(self.limits.max_step)):
            ref64 = np.asarray(ref, dtype=np.float64)
            limited = np.clip(out, ref64 - self.limits.max_step, ref64 + self.limits.max_step)
            if np.any(limited != out):
                self.counts.rate_limited += 1
                out = limited
        clipped = np.clip(out, self.limits.lower, self.limits.upper)
        if np.any(clipped != out):
            self.counts.clipped += 1
            out = clipped
        # Unchanged values stay bit-identical to the policy's float32 (lock-step regression relies on it).
        cmd = np.asarray(requested, dtype=np.float32).reshape(-1) if out is req else out.astype(np.float32)
        self._last = cmd
        return FilterResult(cmd, False)


@dataclass
class LinkWatch:
    """Decides each tick whether the robot link can be trusted, and counts losses and recoveries.

    Lost = the link says it is unhealthy, or there is no State, or the newest State is older than
    `stale_timeout_s` (host receive time). While lost the loop stops planning and sends no targets.
    """
    stale_timeout_s: float = 0.3
    losses: int = 0
    recoveries: int = 0
    lost: bool = False
    lost_since: float = field(default=math.nan)

    def check(self, healthy: bool, state: Any, now: Optional[float] = None) -> bool:
        now = time.monotonic() if now is None else now
        ok = bool(healthy) and state is not None
        if ok:
            rx = getattr(state, "rx_time", math.nan)
            ok = not math.isnan(rx) and now - rx <= self.stale_timeout_s
        if not ok and not self.lost:
            self.lost, self.lost_since = True, now
            self.losses += 1
        elif ok and self.lost:
            self.lost = False
            self.recoveries += 1
        return ok
