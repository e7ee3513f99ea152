"""Host side of the serial protocol over pyserial.

Two layers. SerialTransport owns the port: opened exclusively (a second opener is refused), framed
writes from any thread, reads. SerialLink is the session and protocol handler: one background thread
reads through the transport, decodes frames, keeps the latest State, and drives an explicit session
state (SessionState) through handshakes, silence, device resets, a vanished port and refusals.
The link never sends heartbeats on its own: a stalled control loop must let the device watchdog
trip, so feeding it is the caller's job (send_command or send_heartbeat every tick).

Each SerialLink has a random 64-bit session token: the device belongs to it until close() (Goodbye)
or until it has been silent for max(1 s, 2 x watchdog); another host's Hello is refused meanwhile,
unless it was created with takeover=True (an operator decision, used for the first handshake only).

    link = SerialLink("/dev/ttyACM0", state_timeout_s=0.5)
    caps = link.connect()
    seq = link.send_command(targets)          # realtime: the device tracks the latest target
    state = link.step(targets)                # lock-step: send, then wait for the State that applied it
    link.close()
"""
from __future__ import annotations

import enum
import math
import random
import secrets
import threading
import time
from collections import deque
from typing import Callable, Optional

import numpy as np
import serial

from .protocol import (PROTOCOL_VERSION, Ack, AckResult, Capabilities, CapabilityFlags, DeviceStatus, EStop,
                       Fault, FaultCode, Frame, FrameDecoder, Goodbye, Heartbeat, Hello, JointCommand, Message, Reset,
                       State, StatusFlags, StatusRequest, encode_frame)
from .robot import HandshakeError, LinkError, LinkStats, LinkTimeout

Listener = Callable[[Message], None]


def validate_capabilities(caps: Capabilities) -> None:
    """Raise HandshakeError (one line) when Capabilities cannot describe a usable robot."""
    def bad(why: str) -> HandshakeError:
        return HandshakeError(f"invalid Capabilities from device: {why}")

    if caps.protocol_version != PROTOCOL_VERSION:
        raise bad(f"protocol version {caps.protocol_version}, host speaks {PROTOCOL_VERSION}")
    if caps.joint_count == 0:
        raise bad("zero joints")
    for i in range(caps.joint_count):
        lo, hi, vmax = float(caps.lower[i]), float(caps.upper[i]), float(caps.max_velocity[i])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise bad(f"joint {i} ({caps.joint_names[i] or 'unnamed'}) limits [{lo}, {hi}] are not finite "
                      f"with lower < upper")
        if not (math.isfinite(vmax) and vmax >= 0):
            raise bad(f"joint {i} max velocity {vmax} is not a finite number >= 0")
        step = float(caps.max_step[i])
        if not (math.isfinite(step) and step >= 0):
            raise bad(f"joint {i} max step {step} is not a finite number >= 0")


# Commands the device refused, by the Fault code it named (LinkStats.refused).
REFUSAL_CODES = (FaultCode.ESTOP, FaultCode.BAD_COMMAND, FaultCode.IMPLAUSIBLE)
_COUNTED_FLAGS = (StatusFlags.ESTOP, StatusFlags.WATCHDOG_HOLD, StatusFlags.FAULT, StatusFlags.LIMIT)


class SessionState(enum.Enum):
    """Where a SerialLink's session stands (LinkStats.session_state is its name)."""
    DISCONNECTED = "disconnected"  # no port open (before connect, or the device vanished: reopening)
    HANDSHAKING = "handshaking"    # connect(): Hello sent, waiting for Capabilities
    ACTIVE = "active"              # in a session; States flowing (or not yet overdue)
    SILENT = "silent"              # in a session but no State for state_timeout_s: re-handshaking
    NEED_HANDSHAKE = "need_handshake"  # the device lost our session (reset) or the port was reopened
    REFUSED = "refused"            # a re-handshake was refused: another host owns the device now
    CLOSED = "closed"              # close() was called


class SerialTransport:
    """The port: opened exclusively, framed writes under a lock, reads. Errors are pyserial's/OSError."""

    def __init__(self, port: str, baudrate: int, read_timeout_s: float, write_timeout_s: float) -> None:
        self.port = port
        self.baudrate = baudrate
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self._serial: Optional[serial.SerialBase] = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        # exclusive=True: flock the device, so a second SerialLink (another run) cannot share it.
        ser = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=self.read_timeout_s,
                                    write_timeout=self.write_timeout_s, exclusive=True)
        with self._lock:
            self._serial = ser

    def close(self) -> None:
        with self._lock:
            ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except Exception:  # closing a vanished device may fail; it is gone either way
                pass

    def cancel_read(self) -> None:
        ser = self._serial
        if ser is not None:
            try:
                ser.cancel_read()
            except Exception:  # best effort; the read timeout ends a read anyway
                pass

    def write_frame(self, build: Callable[[], bytes]) -> bool:
        """Build and write one frame atomically (build() runs under the lock, so sequence numbers go out
        in order). False when the port is closed or the write failed."""
        with self._lock:
            ser = self._serial
            if ser is None:
                return False
            try:
                ser.write(build())
            except (serial.SerialException, OSError):
                return False  # the reader notices a vanished port on its next read
            return True

    def read(self) -> bytes:
        """What is there, waiting up to the read timeout. Raises SerialException when the port is closed."""
        ser = self._serial
        if ser is None:
            raise serial.SerialException("port closed")
        return ser.read(max(1, ser.in_waiting))


def _busy_message(port: str, text: str) -> str:
    return (f"device on {port} is in use by another host's session (device said SESSION_BUSY: {text}); "
            f"pass --takeover to end that session")


def _seq_reached(ack: int, target: int) -> bool:
    """ack is at or after target in u16 sequence space (half-range comparison)."""
    return ((ack - target) & 0xFFFF) < 0x8000


class SerialLink:
    """A thread-safe link to a microcontroller speaking docs/protocol.md. Satisfies robot.Robot."""

    FAULT_QUEUE = 256  # take_faults() keeps at most this many; older ones are dropped and counted

    def __init__(self, port: str, baudrate: int = 1_000_000, *, state_timeout_s: float = 0.5,
                 handshake_timeout_s: float = 0.5, handshake_retries: int = 3, auto_reconnect: bool = True,
                 reconnect_interval_s: float = 0.2, write_timeout_s: float = 0.2, read_timeout_s: float = 0.02,
                 takeover: bool = False):
        self.port = port
        self.takeover = takeover
        self.session_token = secrets.randbits(64) or 1  # 0 is reserved-looking; any other value will do
        self.baudrate = baudrate
        self.state_timeout_s = state_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.handshake_retries = max(1, handshake_retries)
        self.auto_reconnect = auto_reconnect
        self.reconnect_interval_s = reconnect_interval_s
        self.write_timeout_s = write_timeout_s
        self.read_timeout_s = read_timeout_s

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._transport = SerialTransport(port, baudrate, read_timeout_s, write_timeout_s)
        self._decoder = FrameDecoder()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._listeners: list[Listener] = []
        self._rng = random.Random()

        # Everything below is guarded by _lock.
        self._stats = LinkStats()
        self._caps: Optional[Capabilities] = None
        self._session = 0                 # increments on every successful handshake
        self._state = SessionState.DISCONNECTED
        self._lost = False                # lost since the last healthy State (for reconnect counting)
        self._pending_nonce: Optional[int] = None
        self._caps_reply: Optional[Capabilities] = None
        self._caps_error: Optional[str] = None
        self._busy_text: Optional[str] = None  # SESSION_BUSY seen while our Hello was outstanding
        self._faults: deque[Fault] = deque()
        self._rx_expected: Optional[int] = None
        self._latest: Optional[State] = None
        self._acks: dict[int, Ack] = {}
        self._device_status: Optional[DeviceStatus] = None
        self._device_status_count = 0
        self._tx_seq = 0
        self._session_start = 0.0
        self._closed = False

    # ----------------------------------------------------------------- public API
    def connect(self) -> Capabilities:
        """Open the port and handshake. Raises HandshakeError with a one-line reason."""
        if self._closed:
            raise LinkError("link is closed")
        if self._caps is not None and self._thread is not None:
            return self._caps
        try:
            self._open_port()
        except (serial.SerialException, OSError, ValueError) as exc:
            if "exclusively lock" in str(exc):
                raise HandshakeError(f"cannot open {self.port}: another process has it open (ports are opened "
                                     f"exclusively; stop the other run first)") from None
            raise HandshakeError(f"cannot open {self.port}: {exc}") from None
        with self._lock:
            self._state = SessionState.HANDSHAKING
        try:
            caps = self._handshake(self.handshake_retries, takeover=self.takeover)
        except (serial.SerialException, OSError) as exc:
            self._close_port()
            raise HandshakeError(f"{self.port} failed during handshake: {exc}") from None
        except HandshakeError:
            self._close_port()
            raise
        self._thread = threading.Thread(target=self._run, name=f"SerialLink({self.port})", daemon=True)
        self._thread.start()
        return caps

    @property
    def capabilities(self) -> Optional[Capabilities]:
        return self._caps

    @property
    def session_state(self) -> SessionState:
        with self._lock:
            return self._state

    def take_faults(self) -> list[Fault]:
        """Fault messages received since the last call, oldest first. Never blocks. At most FAULT_QUEUE are
        kept between calls; older ones are dropped and counted in stats.faults_dropped."""
        with self._lock:
            out = list(self._faults)
            self._faults.clear()
            return out

    def latest_state(self) -> Optional[State]:
        """The newest State (with .seq and .rx_time set), or None before the first one. Never blocks."""
        with self._lock:
            return self._latest

    def wait_state(self, after_seq: Optional[int] = None, timeout: float = 1.0) -> State:
        """Block until a State arrives that has applied host frame `after_seq` (its ack_seq is at or past it),
        or, with after_seq=None, until any State newer than the current latest one. Raises LinkTimeout,
        or LinkError if the link re-handshakes meanwhile (the device may have lost the command)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            baseline, session = self._latest, self._session
            while True:
                st = self._latest
                if session != self._session:
                    raise LinkError("link re-handshaked while waiting for a State; the command may be lost")
                if st is not None and (st is not baseline if after_seq is None
                                       else _seq_reached(st.ack_seq, after_seq)):
                    return st
                left = deadline - time.monotonic()
                if left <= 0:
                    what = "a new State" if after_seq is None else f"a State acknowledging frame {after_seq}"
                    raise LinkTimeout(f"no {what} from {self.port} within {timeout:.3g} s")
                self._cond.wait(left)

    def send_command(self, targets: np.ndarray, valid: bool = True) -> Optional[int]:
        """Send position targets. Returns the frame seq (for wait_state) or None if the port is down."""
        targets = np.asarray(targets, dtype=np.float32).reshape(-1)
        caps = self._caps
        if caps is not None and len(targets) != caps.joint_count:
            raise LinkError(f"command has {len(targets)} targets; {self.port} has {caps.joint_count} joints")
        return self._send(JointCommand(targets, valid))

    def step(self, targets: np.ndarray, timeout: float = 1.0) -> State:
        """Lock-step: send targets and return the State the device produced after applying them."""
        seq = self.send_command(targets)
        if seq is None:
            raise LinkError(f"cannot send to {self.port}: device not connected")
        return self.wait_state(after_seq=seq, timeout=timeout)

    def send_heartbeat(self) -> Optional[int]:
        """Feed the device watchdog without a new target."""
        return self._send(Heartbeat())

    def estop(self, engage: bool = True, timeout: float = 0.5, retries: int = 3) -> bool:
        """Engage (or release) the device e-stop. True only when the device confirmed: an Ack OK for one
        of our EStop frames or, when engaging, a State with ESTOP set received after we sent it.
        False otherwise (port down, no answer): the caller retries until its deadline and says so."""
        for _ in range(max(1, retries)):
            with self._lock:
                states_before = self._stats.states
            seq = self._send(EStop(engage))
            if seq is None:
                time.sleep(min(timeout, 0.05))  # the port is down: don't spin
                continue
            deadline = time.monotonic() + timeout
            with self._cond:
                while True:
                    ack = self._acks.pop(seq, None)
                    if ack is not None and ack.acked_type == int(EStop.TYPE):
                        if ack.result == AckResult.OK:
                            return True
                        break
                    st = self._latest
                    if engage and st is not None and self._stats.states > states_before \
                            and st.has(StatusFlags.ESTOP):
                        return True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
        return False

    def reset_plant(self, seed: int, initial_state: Optional[np.ndarray] = None, timeout: float = 1.0,
                    retries: int = 3) -> State:
        """Simulated devices only: reset the plant (seeded, optionally to a given state); returns the new State."""
        caps = self._caps
        if caps is None or not caps.flags & CapabilityFlags.SIMULATED:
            raise LinkError(f"{self.port} is not a simulated device; Reset is unsupported")
        init = np.zeros(0, np.float32) if initial_state is None else np.asarray(initial_state, np.float32)
        last_error: LinkError = LinkTimeout(f"no reply to Reset from {self.port}")
        for _ in range(max(1, retries)):
            seq = self._send(Reset(int(seed), init))
            if seq is None:
                last_error = LinkError(f"cannot send to {self.port}: device not connected")
                time.sleep(min(timeout, 0.1))
                continue
            ack = self._wait_ack(seq, timeout)
            if ack is not None and ack.result != AckResult.OK:
                raise LinkError(f"device rejected Reset (initial state of {len(init)} values)")
            try:
                return self.wait_state(after_seq=seq, timeout=timeout)
            except LinkError as exc:  # retrying is safe: the same seed gives the same plant
                last_error = exc
        raise last_error

    def request_device_status(self, timeout: float = 1.0, retries: int = 3) -> DeviceStatus:
        """Ask the device for its counters."""
        for _ in range(max(1, retries)):
            with self._lock:
                count = self._device_status_count
            if self._send(StatusRequest()) is None:
                time.sleep(min(timeout, 0.1))
                continue
            deadline = time.monotonic() + timeout
            with self._cond:
                while self._device_status_count == count and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                if self._device_status_count != count and self._device_status is not None:
                    return self._device_status
        raise LinkTimeout(f"no DeviceStatus from {self.port} after {retries} requests")

    def add_listener(self, fn: Listener) -> None:
        """Call fn(message) from the reader thread for every received message (keep it quick)."""
        with self._lock:
            self._listeners.append(fn)

    @property
    def healthy(self) -> bool:
        """Connected, in a session, and the latest State is younger than state_timeout_s."""
        with self._lock:
            if not self._transport.is_open or self._state is not SessionState.ACTIVE or self._latest is None:
                return False
            return time.monotonic() - self._latest.rx_time <= self.state_timeout_s

    @property
    def stats(self) -> LinkStats:
        with self._lock:
            s = self._stats
            snap = LinkStats(**{k: getattr(s, k) for k in s.__dataclass_fields__})
            snap.corrupt = dict(self._decoder.errors)
            snap.frames_ok = self._decoder.frames_ok
            snap.fault_codes = dict(s.fault_codes)
            snap.refused = dict(s.refused)
            snap.state_flags = dict(s.state_flags)
            snap.session_state = self._state.value
            snap.last_state_age_s = None if self._latest is None else time.monotonic() - self._latest.rx_time
            return snap

    def close(self) -> None:
        """End the session (Goodbye, so the next host need not wait), stop the reader thread, close the
        port. Idempotent. The device holds position; its e-stop latch, if engaged, stays engaged."""
        if self._closed:
            return
        with self._lock:
            in_session = self._state in (SessionState.ACTIVE, SessionState.SILENT)
        if in_session:
            self._send(Goodbye(self.session_token))
        self._closed = True
        self._stop.set()
        self._transport.cancel_read()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._close_port()
        with self._lock:
            self._state = SessionState.CLOSED

    def __enter__(self) -> "SerialLink":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- port and writes
    def _open_port(self) -> None:
        self._transport.open()
        self._decoder.reset()

    def _close_port(self) -> None:
        self._transport.close()
        with self._lock:
            if self._state is not SessionState.CLOSED:
                self._state = SessionState.DISCONNECTED

    def _send(self, message: Message) -> Optional[int]:
        sent: list[int] = []

        def build() -> bytes:  # runs under the transport's lock: seqs leave in order
            seq = self._tx_seq
            self._tx_seq = (seq + 1) & 0xFFFF
            sent.append(seq)
            return encode_frame(message, seq)

        ok = self._transport.write_frame(build)
        with self._lock:
            if ok:
                self._stats.tx_frames += 1
            else:
                self._stats.tx_errors += 1
        return sent[0] if ok else None

    def _wait_ack(self, seq: int, timeout: float) -> Optional[Ack]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while seq not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._acks.pop(seq)

    # ----------------------------------------------------------------- reading
    def _pump_once(self) -> None:
        """Read what is there (waiting up to the read timeout) and handle every decoded frame."""
        data = self._transport.read()
        if not data:
            return
        now = time.monotonic()
        frames = self._decoder.feed(data)
        for frame in frames:
            self._handle(frame, now)

    def _handle(self, frame: Frame, now: float) -> None:
        msg = frame.message
        with self._cond:
            in_session = self._state in (SessionState.ACTIVE, SessionState.SILENT)
            if in_session and self._rx_expected is not None:
                gap = (frame.seq - self._rx_expected) & 0xFFFF
                if 0 < gap < 0x8000:
                    self._stats.seq_gaps += gap
                elif gap >= 0x8000:
                    self._stats.seq_restarts += 1
            self._rx_expected = (frame.seq + 1) & 0xFFFF

            if isinstance(msg, State):
                st = State(msg.timestamp_us, msg.positions, msg.extras, msg.flags, msg.ack_seq,
                           seq=frame.seq, rx_time=now)
                self._latest = st
                self._stats.states += 1
                if st.flags:
                    for flag in _COUNTED_FLAGS:
                        if st.flags & flag:
                            self._stats.state_flags[flag.name] = self._stats.state_flags.get(flag.name, 0) + 1
                if self._state is SessionState.SILENT:
                    self._state = SessionState.ACTIVE  # States flow again
                if self._lost and self._state is SessionState.ACTIVE:
                    self._lost = False
                    self._stats.reconnects += 1
                msg = st
            elif isinstance(msg, Capabilities):
                self._on_capabilities(msg, frame.seq, now)
            elif isinstance(msg, Fault):
                self._on_fault(msg, in_session)
            elif isinstance(msg, Ack):
                self._acks[msg.acked_seq] = msg
                if len(self._acks) > 64:  # unclaimed acks must not pile up
                    self._acks.pop(next(iter(self._acks)))
            elif isinstance(msg, DeviceStatus):
                self._device_status = msg
                self._device_status_count += 1
            self._cond.notify_all()
            listeners = list(self._listeners)
        for fn in listeners:
            fn(msg)

    def _on_fault(self, msg: Fault, in_session: bool) -> None:
        # Called with _lock held.
        self._stats.faults += 1
        name = msg.code.name if isinstance(msg.code, FaultCode) else str(int(msg.code))
        self._stats.fault_codes[name] = self._stats.fault_codes.get(name, 0) + 1
        self._stats.last_fault = msg
        if msg.code in REFUSAL_CODES:
            self._stats.refused[name] = self._stats.refused.get(name, 0) + 1
        if len(self._faults) >= self.FAULT_QUEUE:
            self._faults.popleft()
            self._stats.faults_dropped += 1
        self._faults.append(msg)
        if msg.code == FaultCode.SESSION_BUSY and self._pending_nonce is not None:
            # Maybe our Hello (or another host's, on a shared wire): decided when the attempt times out
            # without our Capabilities.
            self._busy_text = msg.text
        if msg.code == FaultCode.NO_SESSION and in_session:
            # The device rebooted (or never saw our Hello): a new handshake is needed.
            self._stats.device_resets += 1
            self._state = SessionState.NEED_HANDSHAKE
            self._lost = True

    def _on_capabilities(self, caps: Capabilities, seq: int, now: float) -> None:
        # Called with _lock held. Only the reply to our outstanding Hello counts.
        if self._pending_nonce is None or caps.nonce != self._pending_nonce:
            return
        try:
            validate_capabilities(caps)
            if self._caps is not None and (caps.joint_count, caps.extra_count) != (
                    self._caps.joint_count, self._caps.extra_count):
                raise HandshakeError(
                    f"device on {self.port} changed shape: {caps.joint_count} joints/{caps.extra_count} extras, "
                    f"was {self._caps.joint_count}/{self._caps.extra_count}")
        except HandshakeError as exc:
            self._caps_error = str(exc)
            return
        self._caps_reply = caps
        self._pending_nonce = None
        self._caps = caps
        self._session += 1
        self._state = SessionState.ACTIVE  # the silence timer restarts at the new session
        self._rx_expected = (seq + 1) & 0xFFFF
        self._session_start = now
        self._stats.handshakes += 1

    def _handshake(self, tries: int, takeover: bool = False) -> Capabilities:
        """Hello -> Capabilities on the calling thread, which must be the only reader."""
        errors_before = dict(self._decoder.errors)
        got_bytes = False
        for _ in range(tries):
            nonce = self._rng.getrandbits(32)
            with self._lock:
                self._pending_nonce, self._caps_reply, self._caps_error = nonce, None, None
                self._busy_text = None
            if self._send(Hello(PROTOCOL_VERSION, nonce, self.session_token, takeover)) is None:
                raise serial.SerialException("port closed")
            deadline = time.monotonic() + self.handshake_timeout_s
            while time.monotonic() < deadline and not self._stop.is_set():
                before = self._decoder.frames_ok + self._decoder.errors_total
                self._pump_once()
                got_bytes = got_bytes or self._decoder.frames_ok + self._decoder.errors_total > before
                with self._lock:
                    if self._caps_error is not None:
                        self._pending_nonce = None
                        raise HandshakeError(f"{self._caps_error} (port {self.port})")
                    if self._caps_reply is not None:
                        return self._caps_reply
            with self._lock:
                if self._busy_text is not None:  # refused, and no Capabilities for us: not worth retrying
                    self._pending_nonce = None
                    self._stats.sessions_refused += 1
                    raise HandshakeError(_busy_message(self.port, self._busy_text))
        with self._lock:
            self._pending_nonce = None
        dropped = {k: v - errors_before.get(k, 0) for k, v in self._decoder.errors.items()
                   if v > errors_before.get(k, 0)}
        detail = "no frames received"
        if dropped:
            detail = "dropped malformed frames: " + ", ".join(f"{k}={v}" for k, v in dropped.items())
            if "version" in dropped and self._decoder.last_bad_version is not None:
                detail += f"; device speaks protocol version {self._decoder.last_bad_version}, " \
                          f"host {PROTOCOL_VERSION}"
        elif got_bytes:
            detail = "frames received but no Capabilities reply"
        raise HandshakeError(f"no valid Capabilities from {self.port} after {tries} Hello tries "
                             f"of {self.handshake_timeout_s:g} s ({detail})")

    # ----------------------------------------------------------------- background thread
    def _run(self) -> None:
        next_try = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._transport.is_open:
                if not self.auto_reconnect:
                    self._stop.wait(self.reconnect_interval_s)
                    continue
                if now < next_try:
                    self._stop.wait(min(next_try - now, 0.05))
                    continue
                next_try = now + self.reconnect_interval_s
                try:
                    self._open_port()
                except (serial.SerialException, OSError, ValueError):
                    continue
                with self._lock:
                    self._stats.port_reopens += 1
                    self._state = SessionState.NEED_HANDSHAKE
                continue
            try:
                with self._lock:
                    self._check_silence(now)
                    want_handshake = self._state in (SessionState.SILENT, SessionState.NEED_HANDSHAKE,
                                                     SessionState.REFUSED)
                if want_handshake and self.auto_reconnect and now >= next_try:
                    next_try = now + self.reconnect_interval_s
                    try:
                        self._handshake(1)  # never a takeover: losing the device to another host is final
                    except HandshakeError as exc:
                        with self._lock:
                            if "SESSION_BUSY" in str(exc) and self._state is not SessionState.REFUSED:
                                self._state = SessionState.REFUSED
                    continue
                self._pump_once()
            except (serial.SerialException, OSError, TypeError, AttributeError):
                # TypeError/AttributeError: pyserial internals after the fd vanished under a read.
                if self._stop.is_set():
                    break
                self._close_port()
                with self._lock:
                    self._stats.vanished_events += 1
                    self._lost = True
                    self._cond.notify_all()
                next_try = time.monotonic() + self.reconnect_interval_s

    def _check_silence(self, now: float) -> None:
        # Called with _lock held.
        if self._state is not SessionState.ACTIVE:
            return
        last = self._latest.rx_time if self._latest is not None else self._session_start
        last = max(last, self._session_start)
        if now - last > self.state_timeout_s:
            self._state = SessionState.SILENT
            self._lost = True
            self._stats.silent_events += 1
