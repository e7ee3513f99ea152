"""The 1 kHz control loop, run in the child process that owns the pylibfranka.Robot (why a child
process, and what it guarantees every cycle: the package docstring)."""
from __future__ import annotations

import math
import os
import time
from typing import Any, Optional

import numpy as np

from ..protocol import StatusFlags
from .arms import ArmLimits
from .fci import DT, MAX_LOST_CYCLES, N_JOINTS, REFERENCE_TOLERANCE, VELOCITY_TOLERANCE
from .ratelimit import JointRateLimiter, clamp_target, late_command_history
from .safety import CommandLimits, SafetyConfig
from .shared import _Layout, _Mode


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
