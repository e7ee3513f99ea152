"""FrankaRobot: the host side (the Robot protocol) of the Franka link. It starts the control process
(child.py) and exchanges targets and states with it through the shared block (shared.py)."""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..protocol import PROTOCOL_VERSION, Capabilities, Fault, FaultCode, State
from ..robot import HandshakeError, LinkError, LinkTimeout
from .arms import ARMS
from .child import _control_main
from .fci import DT, N_JOINTS, import_pylibfranka
from .safety import CommandLimits, SafetyConfig
from .settings import resolve_settings
from .shared import EXTRA_NAMES, _Layout, _Mode
from .stats import FrankaStats

# Conservative collision thresholds (Nm, N): libfranka examples' "setDefaultBehavior" values.
DEFAULT_COLLISION = ((20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0), (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0),
                     (20.0, 20.0, 20.0, 25.0, 25.0, 25.0), (20.0, 20.0, 20.0, 25.0, 25.0, 25.0))
DEFAULT_JOINT_IMPEDANCE = (3000.0, 3000.0, 3000.0, 2500.0, 2500.0, 2000.0, 2000.0)  # Nm/rad


def _seq_reached(ack: int, target: int) -> bool:
    return ((ack - target) & 0xFFFF) < 0x8000


class FrankaRobot:
    """A Franka arm through pylibfranka. Satisfies firmware_bridge.robot.Robot.

    host: the arm's FCI address (franka-sim: a loopback address). arm: "fr3" or "fer" (Panda).
    realtime: True / "enforce" = libfranka's RealtimeConfig.kEnforce (needs a PREEMPT_RT kernel, as
    on the real arm), False / "ignore" = kIgnore (franka-sim, a desktop kernel). late_commands:
    "dropped" (the FCI drops a command that misses its cycle), "applied" (franka-sim applies it late,
    differenced over the cycles it missed) or "auto" ("applied" on a loopback host only;
    _ControlLoop.follow_arm_reference says why it matters). safety: see SafetyConfig.
    Settings left as None fall back to the environment, then the defaults (fr3, enforce, auto):
    settings.resolve_settings, the only place that reads IMLE_FRANKA_*.
    """

    def __init__(self, host: str, *, arm: Optional[str] = None, safety: SafetyConfig = SafetyConfig(),
                 realtime: Union[bool, str, None] = None, collision_thresholds: Optional[tuple] = DEFAULT_COLLISION,
                 joint_impedance: Optional[Sequence[float]] = DEFAULT_JOINT_IMPEDANCE,
                 connect_timeout_s: float = 20.0, state_timeout_s: float = 0.1,
                 late_commands: Optional[str] = None):
        self.settings = resolve_settings(host, arm, realtime, late_commands)  # ValueError: one line
        self.late_commands = self.settings.late_commands
        self.host = host
        self.arm = ARMS[self.settings.arm]
        self.safety = safety
        self.limits = CommandLimits.from_arm(self.arm, safety)
        self.realtime = self.settings.realtime
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
        pf_version = getattr(import_pylibfranka(), "__version__", "?")
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
