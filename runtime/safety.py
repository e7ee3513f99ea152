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
from typing import Any, Mapping, Optional

import numpy as np


class SafetyConfigError(ValueError):
    """The limits from the device, the operator's robot config and the package cannot make a safe box
    (non-finite, inverted or disjoint limits). One line naming the source, the joint and the values."""


DEFAULT_STEP_FRACTION = 0.1     # per-command step when nobody declares one: 10% of the joint's device range
PERIOD_RANGE_S = (1e-3, 10.0)   # control periods outside this are mistakes (1 kHz .. 0.1 Hz)


def check_period(value: Any, what: str = "control period") -> float:
    """A finite period in PERIOD_RANGE_S (seconds); SafetyConfigError otherwise."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise SafetyConfigError(f"{what} must be a number of seconds, got {value!r}") from None
    lo, hi = PERIOD_RANGE_S
    if not (math.isfinite(p) and lo <= p <= hi):
        raise SafetyConfigError(f"{what} must be between {lo:g} and {hi:g} s, got {value!r}")
    return p


def parse_action_limits(spec: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Manifest action limits -> (lower, upper) float64 arrays; a missing bound is -inf/+inf (the package
    does not narrow that side). Non-finite or inverted values are refused (SafetyConfigError).

    Accepts {"low"/"lower"/"min": [...], "high"/"upper"/"max": [...]} or [[lo, hi], ...] or None.
    """
    lo = np.full(dim, -np.inf)
    hi = np.full(dim, np.inf)
    if spec is None:
        return lo, hi
    try:
        if isinstance(spec, Mapping):
            low = next((spec[k] for k in ("low", "lower", "min") if k in spec), None)
            high = next((spec[k] for k in ("high", "upper", "max") if k in spec), None)
        else:
            pairs = np.asarray(spec, dtype=np.float64)
            if pairs.shape != (dim, 2):
                raise SafetyConfigError(f"package action limits must be {dim} [low, high] pairs, got shape "
                                        f"{pairs.shape}")
            low, high = pairs[:, 0], pairs[:, 1]
        if low is not None:
            lo = _vec(low, dim, "package action.low")
        if high is not None:
            hi = _vec(high, dim, "package action.high")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SafetyConfigError):
            raise
        raise SafetyConfigError(f"package action limits are not numbers ({exc})") from None
    for i in range(dim):
        if (low is not None and not math.isfinite(lo[i])) or (high is not None and not math.isfinite(hi[i])):
            raise SafetyConfigError(f"package action limits of action {i} must be finite, got "
                                    f"[{lo[i]!r}, {hi[i]!r}]")
        if lo[i] > hi[i]:
            raise SafetyConfigError(f"package action limits of action {i} are inverted: low {lo[i]:g} > "
                                    f"high {hi[i]:g}")
    return lo, hi


@dataclass
class SafetyLimits:
    """Per-joint position bounds and the largest change of the commanded target in one command."""
    lower: np.ndarray
    upper: np.ndarray
    max_step: np.ndarray                                   # always finite and > 0 when built by effective_limits
    names: tuple[str, ...] = ()
    sources: list[dict[str, str]] = field(default_factory=list)  # per joint: which source set each bound
    notes: list[str] = field(default_factory=list)         # e.g. a package that tried to widen the box

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record of the limits used (summary.json)."""
        names = self.names or tuple(f"joint{i}" for i in range(self.lower.size))
        joints = {}
        for i, n in enumerate(names):
            d = {"lower": float(self.lower[i]), "upper": float(self.upper[i]), "max_step": float(self.max_step[i])}
            if i < len(self.sources):
                d["sources"] = dict(self.sources[i])
            joints[n] = d
        return {"joints": joints, "notes": list(self.notes)}


def effective_limits(caps: Any, period_s: float, robot_config: Any = None, action_limits: Any = None
                     ) -> SafetyLimits:
    """The position box and step limit the host enforces: the intersection of the device's Capabilities,
    the operator's robot config (runtime.robot_config.RobotConfig) and the package's action range.

    The package can narrow the box, never widen it (a wider package range is noted and has no effect).
    The step limit per joint is the smallest of: robot config max_step, robot config max_velocity *
    period, device max_velocity * period, device max_step (0 = the device does not say); when none
    of these exists, DEFAULT_STEP_FRACTION of the joint's device range.
    """
    period = check_period(period_s)
    names = tuple(caps.joint_names)
    n = len(names)
    d_lo = _vec(caps.lower, n, "device lower limits")
    d_hi = _vec(caps.upper, n, "device upper limits")
    d_vel = _vec(caps.max_velocity, n, "device max_velocity")
    raw_step = getattr(caps, "max_step", None)  # protocol v2; older Capabilities do not declare it
    d_step = _vec(raw_step, n, "device max_step") if raw_step is not None else np.zeros(n)
    for i, name in enumerate(names):
        if not (math.isfinite(d_lo[i]) and math.isfinite(d_hi[i])):
            raise SafetyConfigError(f"device Capabilities: joint {name}: limits must be finite, got "
                                    f"[{d_lo[i]!r}, {d_hi[i]!r}]")
        if not d_lo[i] < d_hi[i]:
            raise SafetyConfigError(f"device Capabilities: joint {name}: lower {d_lo[i]:g} is not below "
                                    f"upper {d_hi[i]:g}")
        for what, v in (("max_velocity", d_vel[i]), ("max_step", d_step[i])):
            if not (math.isfinite(v) and v >= 0):
                raise SafetyConfigError(f"device Capabilities: joint {name}: {what} must be finite and >= 0 "
                                        f"(0 = not limited), got {v!r}")
    if robot_config is not None:
        robot_config.check_joints(names)
    p_lo, p_hi = parse_action_limits(action_limits, n)
    src_cfg = getattr(robot_config, "source", "robot config")
    lower, upper, step = d_lo.copy(), d_hi.copy(), np.empty(n)
    sources: list[dict[str, str]] = []
    notes: list[str] = []
    for i, name in enumerate(names):
        jc = robot_config.joints.get(name) if robot_config is not None else None
        src = {"lower": "device", "upper": "device"}
        if jc is not None and jc.lower is not None and jc.lower > lower[i]:
            lower[i], src["lower"] = jc.lower, "robot config"
        if jc is not None and jc.upper is not None and jc.upper < upper[i]:
            upper[i], src["upper"] = jc.upper, "robot config"
        if not lower[i] < upper[i]:
            raise SafetyConfigError(f"{src_cfg}: joint {name}: [{jc.lower if jc else None}, "
                                    f"{jc.upper if jc else None}] leaves nothing of the device's range "
                                    f"[{d_lo[i]:g}, {d_hi[i]:g}]")
        if p_lo[i] < lower[i] or p_hi[i] > upper[i]:
            if math.isfinite(p_lo[i]) or math.isfinite(p_hi[i]):
                notes.append(f"package action range of joint {name} [{p_lo[i]:g}, {p_hi[i]:g}] is wider than the "
                             f"robot's [{lower[i]:g}, {upper[i]:g}]: the robot's limits apply")
        if p_lo[i] > lower[i]:
            lower[i], src["lower"] = p_lo[i], "package"
        if p_hi[i] < upper[i]:
            upper[i], src["upper"] = p_hi[i], "package"
        if lower[i] > upper[i]:
            raise SafetyConfigError(f"joint {name}: the package's action range [{p_lo[i]:g}, {p_hi[i]:g}] and the "
                                    f"robot's range do not overlap")
        candidates = []
        if jc is not None and jc.max_step is not None:
            candidates.append((jc.max_step, "robot config max_step"))
        if jc is not None and jc.max_velocity is not None:
            candidates.append((jc.max_velocity * period, "robot config max_velocity"))
        if d_vel[i] > 0:
            candidates.append((float(d_vel[i]) * period, "device max_velocity"))
        if d_step[i] > 0:
            candidates.append((float(d_step[i]), "device max_step"))
        if candidates:
            step[i], src["max_step"] = min(candidates)
        else:
            step[i] = DEFAULT_STEP_FRACTION * (d_hi[i] - d_lo[i])
            src["max_step"] = f"default ({DEFAULT_STEP_FRACTION:.0%} of the device range)"
        sources.append(src)
    return SafetyLimits(lower, upper, step, names, sources, notes)


def _vec(values: Any, dim: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SafetyConfigError(f"{what} are not numbers: {values!r}"[:200]) from None
    if arr.size != dim:
        raise SafetyConfigError(f"{what} has {arr.size} values, the robot has {dim} joints")
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

    Order: e-stop latch -> NaN guard -> position clip -> step limit. The step limit is relative to
    the reference: the last sent command, or (first command of an episode, after a link loss or a
    device fault) the robot's current position. Every command is within max_step of its reference,
    so the device's own plausibility check (which compares with its current target) never sees a
    larger jump; it is inside the position box whenever the reference is, and a robot found outside
    the box is brought back by at most max_step per command. Both hold after the float32 cast.
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

    def _reference(self, current: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """What the next command steps from: the last command, else the current position (float64)."""
        if self._last is not None:
            return np.asarray(self._last, dtype=np.float64)
        if current is None:
            return None
        cur = np.asarray(current, dtype=np.float64).reshape(-1)
        if cur.size != self.limits.lower.size or not np.all(np.isfinite(cur)):
            return None
        return cur

    def _limit(self, target: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """`target` (already inside the box) limited to max_step from `ref`, as float32 that keeps both rules."""
        lim = self.limits
        out = np.clip(target, ref - lim.max_step, ref + lim.max_step)
        cmd = out.astype(np.float32)
        # float32 rounding may land half an ulp past a bound: one ulp towards the reference fixes it
        c64 = cmd.astype(np.float64)
        bad = ((np.abs(c64 - ref) > lim.max_step) | ((c64 > lim.upper) & (ref <= lim.upper))
               | ((c64 < lim.lower) & (ref >= lim.lower)))
        if bad.any():
            cmd[bad] = np.nextafter(cmd[bad], ref.astype(np.float32)[bad])
        return cmd

    def hold_target(self, current: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """Where to hold: the last sent command, else the current position (a robot found outside the
        box is moved back towards it by at most one step)."""
        if self._last is not None:
            return self._last
        ref = self._reference(current)
        if ref is None:
            return None
        return self._limit(np.clip(ref, self.limits.lower, self.limits.upper), ref)

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
        ref = self._reference(current)
        if ref is None:  # nowhere known to step from: the step limit cannot be applied, so send nothing
            return FilterResult(None, True, "no-reference")
        clipped = np.clip(req, self.limits.lower, self.limits.upper)
        changed = False
        if np.any(clipped != req):
            self.counts.clipped += 1
            changed = True
        if np.any(np.abs(clipped - ref) > self.limits.max_step):
            self.counts.rate_limited += 1
            changed = True
        # Unchanged values stay bit-identical to the policy's float32 (lock-step regression relies on it).
        cmd = self._limit(clipped, ref) if changed else np.asarray(requested, dtype=np.float32).reshape(-1).copy()
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
