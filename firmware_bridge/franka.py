"""Franka arm (FR3, or Panda/FER) through pylibfranka, behind the same `Robot` interface as SerialLink.

    robot = FrankaRobot("172.16.0.2")          # the FCI address of the arm's Control box
    caps = robot.connect()                     # 7 joints, datasheet limits, libfranka version
    robot.send_command(q_target)               # any rate; streamed to the arm at 1 kHz, rate limited
    state = robot.latest_state()               # q (positions); dq, end-effector xyz, commanded q (extras)
    robot.estop()                              # controlled stop, then the arm holds (robot idle)
    robot.close()

Why a child process and not a thread: the Franka's real-time interface wants a joint command every
millisecond, and pylibfranka's `readOnce()` keeps the GIL while it waits for the next robot state.
Measured against franka-sim: a 1 kHz loop in a thread halves the throughput of the process's other
threads and is itself delayed by up to 15 ms (15 lost cycles; the FCI aborts after 20) whenever
they compute. So the 1 kHz loop runs in its own process (spawned, so it inherits no threads), which
owns the libfranka connection; targets and states cross in a small shared-memory block guarded by
a lock that the control loop only ever *tries* to take, so the policy process can never stall it.

Safety in the control loop, every 1 ms cycle:
* targets are clamped inside the datasheet joint limits (minus a margin) and non-finite targets
  are refused;
* the commanded position follows the target through a jerk-, acceleration- and velocity-limited
  approach (`rate_limit_step`, limits = datasheet x scale factors), so a target far away is reached
  smoothly at bounded speed and never by a jump; the commanded signal also stays inside the FR3's
  position-dependent velocity envelope, so the FCI's own checks (the ones that raise
  `joint_motion_generator_*` reflexes) are never the safety net;
* a watchdog: no `send_command` (valid or not) for `watchdog_s` -> decelerate and hold;
* each cycle continues from where the arm's commanded reference is: our last command, bridged over
  any cycle we missed the way the FCI bridges it (acceleration held, integrated), with the arm's own
  dq_d / ddq_d when its q_d confirms that point (franka-sim re-differences a late command over the
  cycles it answered, like libfranka's limitRate reads them). A state whose q_d is elsewhere is
  stale (it left before our command was applied: franka-sim on a loaded machine) and is not
  followed: continuing from it steps the command back by a cycle of motion (~300 rad/s^2 at
  0.3 rad/s, which the FCI rejects). benchmarks/franka_sim_stress.py, two busy loops on 2 cores:
  0 of 100 far-target motions aborted, where re-seeding from every state's q_d aborted 3 of 100;
* a late command: the FCI drops it, franka-sim applies it, differenced over every cycle since our
  previous one (`late_commands`, by default "applied" on loopback only). Against franka-sim the first
  command after lost cycles eases any held acceleration by one cycle's jerk budget, so the next
  state's q_d tells whether it arrived in time, and a late one is continued from the history
  franka-sim recorded (`follow_arm_reference`). With the control process frozen for 1-8 ms every
  20-80 ms: 0 of 40 motions aborted, against 26 of 40 before;
* e-stop / close / parent process gone -> decelerate at SafetyConfig.stop_scale x the arm's limits,
  finish the motion; the arm then holds its position under its own controller (robot mode Idle).
libfranka exceptions (reflexes, network loss) end the motion and mark the link unhealthy; the arm
stops itself. `recover()` runs libfranka's automatic error recovery, as an explicit operator action.
"""
from __future__ import annotations

import importlib
import ipaddress
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np

from .protocol import PROTOCOL_VERSION, Capabilities, Fault, FaultCode, State, StatusFlags
from .robot import HandshakeError, LinkError, LinkStats, LinkTimeout

DT = 0.001          # the FCI cycle: one joint command per millisecond
MAX_LOST_CYCLES = 20  # the FCI stops a motion after this many consecutive cycles without a command
REFERENCE_TOLERANCE = 3e-7  # rad: q_d's float32 rounding on the wire, plus a little
VELOCITY_TOLERANCE = 1e-5   # rad/s: dq_d's float32 rounding, plus a little
N_JOINTS = 7


class FrankaImportError(LinkError, ImportError):
    """pylibfranka is not installed."""


def _import_pylibfranka() -> Any:
    try:
        return importlib.import_module("pylibfranka")
    except ImportError as exc:
        raise FrankaImportError(
            f"pylibfranka is not installed ({exc}); install the franka extra: pip install 'imle-policy[franka]'"
        ) from None


# --------------------------------------------------------------------------------------- arm limits
@dataclass(frozen=True)
class ArmLimits:
    """Joint-space limits of one Franka arm model (datasheet / libfranka rate_limiting.h)."""
    name: str
    joint_names: tuple[str, ...]
    lower: tuple[float, ...]          # rad
    upper: tuple[float, ...]          # rad
    max_velocity: tuple[float, ...]   # rad/s
    max_acceleration: tuple[float, ...]  # rad/s^2
    max_jerk: tuple[float, ...]       # rad/s^3
    # FR3 only: position-dependent velocity envelope (libfranka joint_velocity_limits.cpp):
    #   upper(q) = min(vmax, max(0, -offset + sqrt(2 * decel * (q_upper - q)))), mirrored below.
    velocity_offset: Optional[tuple[float, ...]] = None
    deceleration: Optional[tuple[float, ...]] = None
    urdf_lower: Optional[tuple[float, ...]] = None  # the envelope's reference stops (the URDF's)
    urdf_upper: Optional[tuple[float, ...]] = None


# Franka Research 3 datasheet ("Robot and interface specifications"), FCI joint limits.
FR3 = ArmLimits(
    name="fr3",
    joint_names=tuple(f"fr3_joint{i}" for i in range(1, 8)),
    lower=(-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
    upper=(2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
    max_velocity=(2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26),
    max_acceleration=(10.0,) * 7,
    max_jerk=(5000.0,) * 7,
    velocity_offset=(0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35),
    deceleration=(6.0, 2.585, 3.5, 4.0, 17.0, 5.5, 17.0),
    urdf_lower=(-2.7501, -1.7918, -2.9065, -3.0481, -2.8101, 0.54092, -3.0196),
    urdf_upper=(2.7501, 1.7918, 2.9065, -0.1458, 2.8101, 4.5205, 3.0196),
)

# Franka Emika Panda (FER) datasheet.
FER = ArmLimits(
    name="fer",
    joint_names=tuple(f"panda_joint{i}" for i in range(1, 8)),
    lower=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    upper=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
    max_velocity=(2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100),
    max_acceleration=(15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0),
    max_jerk=(7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0),
)

ARMS = {"fr3": FR3, "fer": FER, "panda": FER}


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


# ------------------------------------------------------------------------------------ rate limiter
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


# ------------------------------------------------------------------------- shared-memory exchange
class _Mode:
    STARTING, IDLE, RUNNING, HOLD, ESTOPPED, FAULT, CLOSED = range(7)
    NAMES = ("starting", "idle", "running", "hold", "estopped", "fault", "closed")


class _Layout:
    """Offsets into the float64 shared block. Parent -> child first, then child -> parent."""
    n = N_JOINTS
    # parent -> child
    P_SEQ, P_FEED, P_ESTOP, P_CLOSE, P_RECOVER = range(5)
    P_TARGET = 5
    # child -> parent
    C_SEQ = P_TARGET + n
    C_TIME, C_HOST_TIME, C_FLAGS, C_ACK, C_MODE = range(C_SEQ + 1, C_SEQ + 6)
    C_CYCLES, C_LOST, C_ERRORS, C_WATCHDOG, C_CLAMPS, C_SUCCESS, C_STALE = range(C_SEQ + 6, C_SEQ + 13)
    C_Q = C_SEQ + 13
    C_DQ = C_Q + n
    C_EE = C_DQ + n
    C_QCMD = C_EE + 3
    C_MAXV = C_QCMD + n
    C_MAXA = C_MAXV + n
    C_MAXJ = C_MAXA + n
    SIZE = C_MAXJ + n
    CHILD_START = C_SEQ


EXTRA_NAMES = tuple([f"dq{i}" for i in range(1, 8)] + ["ee_x", "ee_y", "ee_z"]
                    + [f"q_cmd{i}" for i in range(1, 8)])


@dataclass
class FrankaStats(LinkStats):
    """LinkStats plus what the 1 kHz control loop counts."""
    mode: str = "starting"
    control_cycles: int = 0          # commands written to the arm
    lost_cycles: int = 0             # robot cycles that passed without a command from us
    control_errors: int = 0          # libfranka exceptions (reflexes, network, ...)
    watchdog_trips: int = 0
    limit_clamps: int = 0            # targets clamped into the joint range
    stale_states: int = 0            # states whose q_d predated our last command (not followed)
    rejected_commands: int = 0       # refused: e-stopped, faulted, closed or non-finite
    command_success_rate: float = math.nan   # the arm's own count of commands received in time
    max_command_velocity: tuple = ()         # per joint, of the commanded signal, since connect
    max_command_acceleration: tuple = ()
    max_command_jerk: tuple = ()
    last_error: Optional[str] = None


# ---------------------------------------------------------------------------- child: control loop
class _ControlLoop:
    """Runs in the child process; owns the pylibfranka.Robot."""

    def __init__(self, franka: Any, robot: Any, arm: ArmLimits, safety: SafetyConfig, buf: Any, lock: Any,
                 conn: Any, parent_pid: int, late_applied: bool = False):
        self.pf, self.robot, self.arm, self.safety = franka, robot, arm, safety
        self.late_applied = late_applied  # does the peer apply a late command (franka-sim) or drop it (FCI)?
        self.mem = np.frombuffer(buf, dtype=np.float64)
        self.lock, self.conn, self.parent_pid = lock, conn, parent_pid
        self.limits = CommandLimits.from_arm(arm, safety)
        self.limiter = JointRateLimiter(self.limits, self.limits.for_stopping(arm, safety.stop_scale))
        self.mode = _Mode.IDLE
        self.flags = 0
        self.adopted_seq = 0.0
        self.target: Optional[np.ndarray] = None
        self.feed = 0.0
        self.last_feed_time = time.monotonic()
        self.recover_count = 0.0
        self.terminate = False
        self.counters = dict(cycles=0, lost=0, errors=0, watchdog=0, clamps=0, stale=0)
        self.maxv = np.zeros(N_JOINTS)
        self.maxa = np.zeros(N_JOINTS)
        self.maxj = np.zeros(N_JOINTS)
        self.prev_a = np.zeros(N_JOINTS)
        self.gap_start: Optional[tuple] = None  # see follow_arm_reference
        self.gap_cycles = 1
        self.state_seq = 0
        self.success_rate = math.nan
        self.parent_check = 0.0
        self.request = dict(estop=False, close=False, recover=0.0, seq=0.0, feed=0.0)
        self.new_target: Optional[np.ndarray] = None

    # -- exchange with the parent ----------------------------------------------------------------
    def exchange(self, st: Any) -> bool:
        """Publish the state and read the parent's requests, if the lock is free right now."""
        L, m = _Layout, self.mem
        active = self.mode == _Mode.RUNNING or self.mode == _Mode.HOLD
        q_cmd = self.limiter.q if active or st is None else st.q  # commanded = measured when not streaming
        if not self.lock.acquire(False):
            return False
        try:
            self.state_seq += 1
            m[L.C_SEQ] = self.state_seq
            if st is not None:
                m[L.C_TIME] = st.time.to_sec()
                m[L.C_Q:L.C_Q + N_JOINTS] = st.q
                m[L.C_DQ:L.C_DQ + N_JOINTS] = st.dq
                pose = st.O_T_EE
                m[L.C_EE:L.C_EE + 3] = (pose[12], pose[13], pose[14])
            m[L.C_HOST_TIME] = time.monotonic()
            m[L.C_QCMD:L.C_QCMD + N_JOINTS] = q_cmd
            m[L.C_FLAGS] = self.flags
            m[L.C_ACK] = self.adopted_seq
            m[L.C_MODE] = self.mode
            c = self.counters
            m[L.C_CYCLES], m[L.C_LOST], m[L.C_ERRORS] = c["cycles"], c["lost"], c["errors"]
            m[L.C_WATCHDOG], m[L.C_CLAMPS], m[L.C_SUCCESS] = c["watchdog"], c["clamps"], self.success_rate
            m[L.C_STALE] = c["stale"]
            m[L.C_MAXV:L.C_MAXV + N_JOINTS] = self.maxv
            m[L.C_MAXA:L.C_MAXA + N_JOINTS] = self.maxa
            m[L.C_MAXJ:L.C_MAXJ + N_JOINTS] = self.maxj
            r = self.request
            r["estop"], r["close"] = m[L.P_ESTOP] != 0, m[L.P_CLOSE] != 0
            r["recover"], r["feed"] = m[L.P_RECOVER], m[L.P_FEED]
            seq = m[L.P_SEQ]
            if seq != r["seq"]:
                r["seq"] = seq
                self.new_target = np.array(m[L.P_TARGET:L.P_TARGET + N_JOINTS])
        finally:
            self.lock.release()
        return True

    def parent_alive(self) -> bool:
        now = time.monotonic()
        if now - self.parent_check < 0.1:
            return True
        self.parent_check = now
        return os.getppid() == self.parent_pid

    def report(self, kind: str, text: str) -> None:
        try:
            self.conn.send((kind, text))
        except (OSError, ValueError):
            pass

    # -- the modes -------------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            if self.terminate or not self.parent_alive():
                self.request["close"] = True
            if self.mode == _Mode.RUNNING or self.mode == _Mode.HOLD:
                self.run_active()
            elif self.request["close"]:
                break
            else:
                self.run_passive_once()
        self.mode = _Mode.CLOSED
        self.exchange(None)

    def run_passive_once(self) -> None:
        """IDLE / ESTOPPED / FAULT: read the state (the arm holds itself), act on requests."""
        try:
            st = self.robot.read_once()
        except Exception as exc:  # network gone: keep the parent informed, retry slowly
            self.fault(f"reading the robot state failed: {type(exc).__name__}: {exc}", count=False)
            self.exchange(None)
            time.sleep(0.1)
            return
        self.exchange(st)
        r = self.request
        if r["close"]:
            return
        if self.mode == _Mode.FAULT:
            if r["recover"] != self.recover_count:
                self.recover_count = r["recover"]
                try:
                    self.robot.automatic_error_recovery()
                    self.new_target = None  # anything sent before the fault is stale
                    self.mode, self.flags = _Mode.IDLE, 0
                    self.report("recovered", "automatic error recovery succeeded")
                except Exception as exc:
                    self.report("error", f"automatic error recovery failed: {type(exc).__name__}: {exc}")
            return
        self.recover_count = r["recover"]
        if self.mode == _Mode.ESTOPPED:
            if r["estop"]:
                return
            self.mode, self.flags = _Mode.IDLE, 0
        if self.new_target is not None and not r["estop"]:
            self.mode = _Mode.RUNNING  # a fresh target: start streaming (it is adopted in run_active)
        elif r["estop"]:
            self.mode, self.flags = _Mode.ESTOPPED, StatusFlags.ESTOP
            self.new_target = None

    def fault(self, text: str, count: bool = True) -> None:
        if count:
            self.counters["errors"] += 1
        if self.mode != _Mode.FAULT:
            self.report("error", text)
        self.mode = _Mode.FAULT
        self.flags = StatusFlags.FAULT
        self.target = self.new_target = None

    def adopt(self, target: np.ndarray) -> None:
        if not np.all(np.isfinite(target)):
            return  # the parent refuses these already; belt and braces
        clamped, changed = clamp_target(target, self.limits)
        if changed:
            self.counters["clamps"] += 1
            self.flags |= StatusFlags.LIMIT
        else:
            self.flags &= ~StatusFlags.LIMIT
        self.target = clamped
        self.adopted_seq = self.request["seq"]

    def follow_arm_reference(self, st: Any, missed: int) -> None:
        """Put the limiter where the arm's commanded reference is at this state; why, in the module
        docstring. q_d confirms our (bridged) position: keep it exact, take the arm's derivatives if
        they differ. q_d elsewhere: our last command arrived after this state left (a stale state).
        The FCI drops a late command; its bridge stands, which is our own history to within
        jerk * dt^3 of position, so we keep ours. franka-sim applies it instead (late_applied),
        rewinding its bridge, and differences it over the whole gap back to the reference before
        it: a velocity averaged over the gap. After lost cycles, continuing from our own derivatives
        then steps the acceleration by (k+1)(k-1)/2k * a (over the FCI's jerk limit from a 4-cycle
        gap at 0.3 x the acceleration limit), so there we continue from the history franka-sim
        holds (`late_command_history`)."""
        lim = self.limiter
        sent_q = lim.q.copy() if self.late_applied else None  # franka-sim only: nothing extra per tick on an arm
        lim.extrapolate(min(missed, MAX_LOST_CYCLES))
        q_d = np.asarray(st.q_d, dtype=np.float64)
        if missed >= MAX_LOST_CYCLES:  # past 20 lost cycles the arm holds (or stops): follow it
            lim.reset(q_d, st.dq_d, st.ddq_d)
            self.gap_start = None
            return
        if np.all(np.abs(q_d - lim.q) <= REFERENCE_TOLERANCE):
            dq_d = np.asarray(st.dq_d, dtype=np.float64)
            if np.any(np.abs(dq_d - lim.v) > VELOCITY_TOLERANCE):
                lim.v, lim.a = dq_d, np.array(st.ddq_d, dtype=np.float64)
        else:
            self.counters["stale"] += 1
            if self.late_applied and self.gap_start is not None:
                v, a = late_command_history(sent_q, *self.gap_start, self.gap_cycles)
                lim.reset(sent_q, v, a)
                lim.extrapolate(missed)
        if self.late_applied:
            # The reference our next command's gap (if it turns out late) is differenced back to: the
            # one at our last command, before the cycles bridged since.
            self.gap_cycles = missed + 1
            self.gap_start = (sent_q, lim.v - missed * lim.a * DT)

    def run_active(self) -> None:
        """Start joint position control and stream rate-limited commands until told to stop."""
        pf = self.pf
        try:
            ctrl = self.robot.start_joint_position_control(pf.ControllerMode.JointImpedance)
            st, dur = ctrl.readOnce()
        except Exception as exc:
            self.fault(f"cannot start joint position control: {type(exc).__name__}: {exc}")
            return
        self.limiter.reset(st.q_d)
        self.gap_start, self.gap_cycles = None, 1
        self.prev_a[:] = 0.0
        self.target = None
        if self.new_target is not None:
            self.adopt(self.new_target)
            self.new_target = None
        self.last_feed_time = time.monotonic()
        self.feed = self.request["feed"]
        stop_reason: Optional[int] = None   # mode to enter once at rest
        watchdog_s = self.safety.watchdog_s
        lim = self.limiter
        while True:
            try:
                missed = max(0, int(round(dur.to_sec() / DT)) - 1)
                self.counters["lost"] += missed
                self.follow_arm_reference(st, missed)  # a no-op on the first state: lim was just seeded from it
                self.exchange(st)  # publishes lim.q: the arm's reference at st.time
                now = time.monotonic()
                r = self.request
                if self.terminate or not self.parent_alive():
                    r["close"] = True
                if r["feed"] != self.feed:
                    self.feed, self.last_feed_time = r["feed"], now
                if stop_reason is None:
                    if r["close"]:
                        stop_reason = _Mode.CLOSED
                    elif r["estop"]:
                        stop_reason = _Mode.ESTOPPED
                        self.flags |= StatusFlags.ESTOP
                if self.new_target is not None and stop_reason is None:
                    self.adopt(self.new_target)
                    self.new_target = None
                    if self.mode == _Mode.HOLD:
                        self.mode = _Mode.RUNNING
                        self.flags &= ~StatusFlags.WATCHDOG_HOLD
                if (watchdog_s > 0 and self.mode == _Mode.RUNNING and stop_reason is None
                        and now - self.last_feed_time > watchdog_s):
                    self.mode = _Mode.HOLD
                    self.flags |= StatusFlags.WATCHDOG_HOLD
                    self.counters["watchdog"] += 1
                    self.report("watchdog", f"no command for {watchdog_s:.3g} s: decelerating and holding")
                stopping = stop_reason is not None or self.mode == _Mode.HOLD
                self.prev_a[:] = lim.a
                q_cmd = lim.step(None if stopping else self.target, after_gap=self.late_applied and missed > 0)
                np.maximum(self.maxv, np.abs(lim.v), out=self.maxv)
                np.maximum(self.maxa, np.abs(lim.a), out=self.maxa)
                np.maximum(self.maxj, np.abs(lim.a - self.prev_a) / DT, out=self.maxj)
                command = pf.JointPositions(q_cmd.tolist())
                finished = stop_reason is not None and lim.at_rest()
                if finished:
                    command.motion_finished = True
                ctrl.writeOnce(command)
                self.counters["cycles"] += 1
                if finished:
                    self.mode = stop_reason if stop_reason != _Mode.CLOSED else _Mode.IDLE
                    if stop_reason == _Mode.ESTOPPED:
                        self.flags = StatusFlags.ESTOP
                    self.target = self.new_target = None  # after a stop, only a fresh command moves
                    return  # never readOnce() after motion_finished: it blocks for ever
                st, dur = ctrl.readOnce()
                self.success_rate = st.control_command_success_rate
            except Exception as exc:
                self.fault(f"libfranka: {type(exc).__name__}: {exc}")
                return


def _control_main(host: str, arm_name: str, safety: SafetyConfig, realtime: bool,
                  collision: Optional[tuple], joint_impedance: Optional[tuple], buf: Any, lock: Any,
                  conn: Any, parent_pid: int, late_applied: bool = False) -> None:
    """Child-process entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent, which stops us cleanly
    loop_ref: list = []

    def on_term(signum: int, frame: Any) -> None:
        if loop_ref:
            loop_ref[0].terminate = True
        else:
            raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
    try:
        pf = _import_pylibfranka()
    except FrankaImportError as exc:
        conn.send(("fatal", str(exc)))
        return
    try:
        config = pf.RealtimeConfig.kEnforce if realtime else pf.RealtimeConfig.kIgnore
        robot = pf.Robot(host, config)
        if collision is not None:
            robot.set_collision_behavior(*[list(x) for x in collision])
        if joint_impedance is not None:
            robot.set_joint_impedance(list(joint_impedance))
        st = robot.read_once()
    except Exception as exc:
        conn.send(("fatal", f"cannot connect to the Franka at {host}: {type(exc).__name__}: {exc}"))
        return
    loop = _ControlLoop(pf, robot, ARMS[arm_name], safety, buf, lock, conn, parent_pid, late_applied)
    loop_ref.append(loop)
    loop.exchange(st)
    conn.send(("ready", {"libfranka": getattr(pf, "__version__", "?"), "robot_mode": str(st.robot_mode)}))
    try:
        loop.run()
    except Exception as exc:  # a bug in the loop: say so; the arm stops itself when commands cease
        loop.report("fatal", f"control loop crashed: {type(exc).__name__}: {exc}")
        raise


# ------------------------------------------------------------------------------- parent: the link
# Conservative collision thresholds (Nm, N): libfranka examples' "setDefaultBehavior" values.
DEFAULT_COLLISION = ((20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0), (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0),
                     (20.0, 20.0, 20.0, 25.0, 25.0, 25.0), (20.0, 20.0, 20.0, 25.0, 25.0, 25.0))
DEFAULT_JOINT_IMPEDANCE = (3000.0, 3000.0, 3000.0, 2500.0, 2500.0, 2000.0, 2000.0)  # Nm/rad


def _seq_reached(ack: int, target: int) -> bool:
    return ((ack - target) & 0xFFFF) < 0x8000


LATE_COMMANDS = ("dropped", "applied")


def late_commands_for(value: Optional[str], host: str) -> str:
    """What the peer does with a command that misses its cycle: "dropped" (the FCI) or "applied"
    (franka-sim). Default $IMLE_FRANKA_LATE_COMMANDS, else "applied" on a loopback host (where only
    franka-sim can be) and "dropped" anywhere else."""
    value = (value or os.environ.get("IMLE_FRANKA_LATE_COMMANDS") or "auto").strip().lower()
    if value == "auto":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        return "applied" if loopback else "dropped"
    if value not in LATE_COMMANDS:
        raise ValueError(f"late_commands={value!r}: use dropped (the FCI), applied (franka-sim) or auto")
    return value


def _env_realtime() -> bool:
    value = os.environ.get("IMLE_FRANKA_REALTIME", "enforce").strip().lower()
    if value in ("enforce", "1", "on", "true", "yes", ""):
        return True
    if value in ("ignore", "0", "off", "false", "no"):
        return False
    raise ValueError(f"IMLE_FRANKA_REALTIME={value!r}: use enforce or ignore")


class FrankaRobot:
    """A Franka arm through pylibfranka. Satisfies firmware_bridge.robot.Robot.

    host: the arm's FCI address (franka-sim: a loopback address). arm: "fr3" or "fer" (Panda);
    default $IMLE_FRANKA_ARM or fr3. realtime: libfranka's RealtimeConfig.kEnforce (needs a
    PREEMPT_RT kernel, as on the real arm) or kIgnore (franka-sim, a desktop kernel); default
    $IMLE_FRANKA_REALTIME (enforce | ignore) or enforce. safety: see SafetyConfig. late_commands:
    "dropped" (the FCI drops a command that misses its cycle) or "applied" (franka-sim applies it
    late, differenced over the cycles it missed); default $IMLE_FRANKA_LATE_COMMANDS, else "applied"
    on a loopback host and "dropped" elsewhere (_ControlLoop.follow_arm_reference says why it matters).
    """

    def __init__(self, host: str, *, arm: Optional[str] = None, safety: SafetyConfig = SafetyConfig(),
                 realtime: Optional[bool] = None, collision_thresholds: Optional[tuple] = DEFAULT_COLLISION,
                 joint_impedance: Optional[Sequence[float]] = DEFAULT_JOINT_IMPEDANCE,
                 connect_timeout_s: float = 20.0, state_timeout_s: float = 0.1,
                 late_commands: Optional[str] = None):
        arm = (arm or os.environ.get("IMLE_FRANKA_ARM") or "fr3").strip().lower()
        self.late_commands = late_commands_for(late_commands, host)
        realtime = _env_realtime() if realtime is None else realtime
        if arm not in ARMS:
            raise ValueError(f"unknown Franka arm {arm!r}; known: {', '.join(sorted(ARMS))}")
        self.host = host
        self.arm = ARMS[arm]
        self.safety = safety
        self.limits = CommandLimits.from_arm(self.arm, safety)
        self.realtime = realtime
        self.collision_thresholds = collision_thresholds
        self.joint_impedance = None if joint_impedance is None else tuple(float(k) for k in joint_impedance)
        self.connect_timeout_s = connect_timeout_s
        self.state_timeout_s = state_timeout_s
        self._ctx = mp.get_context("spawn")
        self._lock = self._ctx.Lock()
        self._buf = self._ctx.RawArray("d", _Layout.SIZE)
        self._mem = np.frombuffer(self._buf, dtype=np.float64)
        self._proc: Optional[Any] = None
        self._conn: Optional[Any] = None
        self._caps: Optional[Capabilities] = None
        self._closed = False
        self._seq = 0
        self._feed = 0
        self._estop = False
        self._recover = 0
        self._tx = 0
        self._rejected = 0
        self._last_error: Optional[str] = None
        self._fatal: Optional[str] = None
        self._events: list[tuple[str, str]] = []
        self._faults: list[Fault] = []   # not yet taken by take_faults() (bounded: FAULT_QUEUE)
        self._faults_dropped = 0
        self._cached: Optional[State] = None
        self._py_lock = threading.Lock()

    # ---------------------------------------------------------------- Robot protocol
    def connect(self) -> Capabilities:
        """Start the control process, connect to the arm, return its Capabilities. Raises HandshakeError."""
        if self._closed:
            raise LinkError("link is closed")
        if self._caps is not None:
            return self._caps
        pf_version = getattr(_import_pylibfranka(), "__version__", "?")
        parent_conn, child_conn = self._ctx.Pipe(duplex=False)
        self._conn = parent_conn
        self._proc = self._ctx.Process(
            target=_control_main, name=f"franka-control({self.host})", daemon=True,
            args=(self.host, self.arm.name, self.safety, self.realtime, self.collision_thresholds,
                  self.joint_impedance, self._buf, self._lock, child_conn, os.getpid(),
                  self.late_commands == "applied"))
        self._proc.start()
        child_conn.close()
        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill_child()
                raise HandshakeError(f"no answer from the Franka control process for {self.host} within "
                                     f"{self.connect_timeout_s:.0f} s")
            try:
                ready = parent_conn.poll(min(left, 0.2))
            except (OSError, EOFError):
                ready = False
            if ready:
                try:
                    kind, payload = parent_conn.recv()
                except (EOFError, OSError):
                    kind, payload = "fatal", "control process exited during connect"
                if kind == "fatal":
                    self._kill_child()
                    raise HandshakeError(str(payload))
                if kind == "ready":
                    break
            elif not self._proc.is_alive():
                raise HandshakeError(f"Franka control process exited (code {self._proc.exitcode}) during connect")
        self._caps = Capabilities(
            firmware_version=f"libfranka {payload.get('libfranka', pf_version)} via pylibfranka; "
                             f"arm {self.arm.name.upper()} at {self.host}",
            joint_names=self.arm.joint_names,
            lower=self.limits.lower, upper=self.limits.upper,
            max_velocity=self.limits.max_velocity,
            extra_names=EXTRA_NAMES,
            watchdog_ms=int(round(self.safety.watchdog_s * 1000)),
            state_period_us=int(DT * 1e6),
            flags=0,
            protocol_version=PROTOCOL_VERSION)
        return self._caps

    @property
    def control_pid(self) -> Optional[int]:
        """PID of the 1 kHz control process (to pin or prioritise it: taskset, chrt), None before
        connect."""
        return self._proc.pid if self._proc is not None else None

    @property
    def capabilities(self) -> Optional[Capabilities]:
        return self._caps

    def latest_state(self) -> Optional[State]:
        """The newest state (q as positions; dq, ee xyz, commanded q as extras), or None. Never blocks long."""
        self._drain_events()
        L, m = _Layout, self._mem
        if self._proc is None or not self._lock.acquire(timeout=0.05):
            return self._cached
        try:
            seq = int(m[L.C_SEQ])
            if seq == 0 or (self._cached is not None and self._cached.seq == seq):
                return self._cached
            block = m[L.CHILD_START:L.SIZE].copy()
        finally:
            self._lock.release()
        off = lambda i: i - L.CHILD_START  # noqa: E731
        extras = np.concatenate([block[off(L.C_DQ):off(L.C_DQ) + N_JOINTS], block[off(L.C_EE):off(L.C_EE) + 3],
                                 block[off(L.C_QCMD):off(L.C_QCMD) + N_JOINTS]])
        state = State(timestamp_us=max(0, int(round(block[off(L.C_TIME)] * 1e6))),
                      positions=block[off(L.C_Q):off(L.C_Q) + N_JOINTS], extras=extras,
                      flags=int(block[off(L.C_FLAGS)]), ack_seq=int(block[off(L.C_ACK)]) & 0xFFFF,
                      seq=seq, rx_time=float(block[off(L.C_HOST_TIME)]))
        self._cached = state
        return state

    def wait_state(self, after_seq: Optional[int] = None, timeout: float = 1.0) -> State:
        """Block until a state newer than the current one (after_seq=None), or one whose ack_seq has
        reached after_seq (the control loop adopted that command). Raises LinkTimeout / LinkError."""
        deadline = time.monotonic() + timeout
        baseline = self.latest_state()
        while True:
            st = self.latest_state()
            if st is not None and (st is not baseline if after_seq is None else _seq_reached(st.ack_seq, after_seq)):
                return st
            if self._fatal is not None:
                raise LinkError(self._fatal)
            if time.monotonic() >= deadline:
                what = "a new state" if after_seq is None else f"a state acknowledging command {after_seq}"
                raise LinkTimeout(f"no {what} from the Franka at {self.host} within {timeout:.3g} s")
            time.sleep(0.0005)

    def send_command(self, targets: np.ndarray, valid: bool = True) -> Optional[int]:
        """Set the joint position target (rad, 7 values). valid=False only feeds the watchdog.
        Returns the command's sequence number, or None when refused (not connected, e-stopped,
        faulted, closed, or a non-finite target)."""
        targets = np.asarray(targets, dtype=np.float64).reshape(-1)
        if valid and targets.shape != (N_JOINTS,):
            raise ValueError(f"a Franka command needs {N_JOINTS} joint targets, got {targets.shape[0]}")
        with self._py_lock:
            mode = self._mode()
            if (self._proc is None or self._closed or self._estop or self._fatal is not None
                    or mode in (_Mode.FAULT, _Mode.CLOSED) or (valid and not np.all(np.isfinite(targets)))):
                self._rejected += 1
                return None
            if not self._lock.acquire(timeout=0.05):
                self._rejected += 1
                return None
            try:
                self._feed += 1
                self._mem[_Layout.P_FEED] = self._feed
                if valid:
                    self._seq += 1
                    self._mem[_Layout.P_TARGET:_Layout.P_TARGET + N_JOINTS] = targets
                    self._mem[_Layout.P_SEQ] = self._seq
            finally:
                self._lock.release()
            self._tx += 1
            return self._seq & 0xFFFF

    def estop(self, engage: bool = True, timeout: float = 2.0) -> bool:
        """engage: decelerate to rest at the arm's full limits, end the motion; the arm then holds its
        position (robot idle) and commands are refused. Returns True once the control loop confirms.
        engage=False releases it; the arm stays put until the next send_command."""
        with self._py_lock:
            self._estop = engage
            self._write(_Layout.P_ESTOP, 1.0 if engage else 0.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mode = self._mode()
            if self._proc is None or not self._proc.is_alive():
                return False
            if engage and mode in (_Mode.ESTOPPED, _Mode.FAULT):
                return True
            if not engage and mode != _Mode.ESTOPPED:
                return True
            time.sleep(0.001)
        return False

    def recover(self, timeout: float = 5.0) -> bool:
        """After a reflex (fault): run libfranka's automatic error recovery. An operator decision."""
        with self._py_lock:
            self._recover += 1
            self._write(_Layout.P_RECOVER, float(self._recover))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain_events()
            if self._mode() != _Mode.FAULT:
                self._fatal = None
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Stop the arm (controlled), end the control process. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._proc is not None:
            self._write(_Layout.P_CLOSE, 1.0)
            self._proc.join(timeout=5.0)
            if self._proc.is_alive():
                self._kill_child()
        if self._conn is not None:
            self._conn.close()

    @property
    def healthy(self) -> bool:
        """Connected, not faulted, and the latest state is younger than state_timeout_s."""
        self._drain_events()
        if self._proc is None or self._closed or self._fatal is not None or not self._proc.is_alive():
            return False
        st = self.latest_state()
        if st is None or self._mode() in (_Mode.FAULT, _Mode.CLOSED):
            return False
        return time.monotonic() - st.rx_time <= self.state_timeout_s

    @property
    def stats(self) -> FrankaStats:
        self._drain_events()
        L, m = _Layout, self._mem
        block = m.copy()
        st = self._cached
        n = lambda i: int(block[i])  # noqa: E731
        faults = {k: v for k, v in (("libfranka", n(L.C_ERRORS)), ("watchdog", n(L.C_WATCHDOG)),
                                    ("limit", n(L.C_CLAMPS))) if v}
        return FrankaStats(
            frames_ok=n(L.C_SEQ), states=n(L.C_SEQ), seq_gaps=n(L.C_LOST),
            faults=n(L.C_ERRORS) + n(L.C_WATCHDOG), fault_codes=faults,
            last_fault=None if self._last_error is None else Fault(FaultCode.INTERNAL, self._last_error[:255]),
            tx_frames=self._tx, tx_errors=self._rejected, handshakes=1 if self._caps is not None else 0,
            last_state_age_s=None if st is None else time.monotonic() - st.rx_time,
            mode=_Mode.NAMES[int(block[L.C_MODE])] if 0 <= int(block[L.C_MODE]) < len(_Mode.NAMES) else "?",
            control_cycles=n(L.C_CYCLES), lost_cycles=n(L.C_LOST), control_errors=n(L.C_ERRORS),
            watchdog_trips=n(L.C_WATCHDOG), limit_clamps=n(L.C_CLAMPS), stale_states=n(L.C_STALE),
            rejected_commands=self._rejected, faults_dropped=self._faults_dropped,
            command_success_rate=float(block[L.C_SUCCESS]),
            max_command_velocity=tuple(block[L.C_MAXV:L.C_MAXV + N_JOINTS]),
            max_command_acceleration=tuple(block[L.C_MAXA:L.C_MAXA + N_JOINTS]),
            max_command_jerk=tuple(block[L.C_MAXJ:L.C_MAXJ + N_JOINTS]),
            last_error=self._fatal or self._last_error)

    @property
    def last_error(self) -> Optional[str]:
        self._drain_events()
        return self._fatal or self._last_error

    FAULT_QUEUE = 256
    # Control-loop events as protocol faults: libfranka exceptions (reflexes, network) and crashes are
    # INTERNAL, a watchdog hold is WATCHDOG; "recovered" is not a fault.
    _EVENT_FAULTS = {"error": FaultCode.INTERNAL, "fatal": FaultCode.INTERNAL, "watchdog": FaultCode.WATCHDOG}

    def take_faults(self) -> list[Fault]:
        """Faults since the last call (control-loop errors, reflexes, watchdog holds), oldest first. Never
        blocks; at most FAULT_QUEUE are kept between calls (older ones dropped, counted in stats)."""
        self._drain_events()
        out, self._faults = self._faults, []
        return out

    def events(self) -> list[tuple[str, str]]:
        """(kind, text) messages from the control loop so far: error, watchdog, recovered, fatal."""
        self._drain_events()
        return list(self._events)

    def __enter__(self) -> "FrankaRobot":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _mode(self) -> int:
        return int(self._mem[_Layout.C_MODE]) if self._proc is not None else _Mode.STARTING

    def _write(self, index: int, value: float) -> None:
        if self._lock.acquire(timeout=0.5):
            try:
                self._mem[index] = value
            finally:
                self._lock.release()
        else:  # the child died holding the lock: write anyway, nothing else reads it
            self._mem[index] = value

    def _drain_events(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll(0):
                kind, text = conn.recv()
                self._events.append((kind, str(text)))
                code = self._EVENT_FAULTS.get(kind)
                if code is not None:
                    if len(self._faults) >= self.FAULT_QUEUE:
                        self._faults.pop(0)
                        self._faults_dropped += 1
                    self._faults.append(Fault(code, f"{kind}: {text}"[:255]))
                if kind in ("error", "fatal"):
                    self._last_error = str(text)
                if kind == "fatal":
                    self._fatal = str(text)
        except (EOFError, OSError):
            if self._proc is not None and not self._proc.is_alive() and not self._closed and self._fatal is None:
                self._fatal = f"Franka control process exited (code {self._proc.exitcode})"

    def _kill_child(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=3.0)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2.0)
