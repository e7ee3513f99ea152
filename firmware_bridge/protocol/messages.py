"""Message types and their little-endian payload layouts (docs/protocol.md is the normative text).

Messages are frozen dataclasses. Float arrays are read-only float32 numpy arrays. Equality is
bitwise on the encoded payload, so NaNs compare equal to themselves and host-side metadata
(State.seq, State.rx_time) is ignored.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import ClassVar, Optional, Union

import numpy as np

from .errors import ProtocolError

PROTOCOL_VERSION = 2  # v2: CRC-32 frames, session tokens, per-joint max_step


class MsgType(IntEnum):
    HELLO = 0x01           # host -> device
    CAPABILITIES = 0x02    # device -> host
    STATE = 0x03           # device -> host
    JOINT_COMMAND = 0x04   # host -> device
    HEARTBEAT = 0x05       # host -> device
    ESTOP = 0x06           # host -> device
    FAULT = 0x07           # device -> host
    RESET = 0x08           # host -> device (simulated plants only)
    ACK = 0x09             # device -> host
    STATUS_REQUEST = 0x0A  # host -> device
    DEVICE_STATUS = 0x0B   # device -> host
    GOODBYE = 0x0C         # host -> device: the host ends its session (v2)


class StatusFlags(IntFlag):
    """State.flags bits."""
    ESTOP = 0x0001          # e-stop engaged: holding, commands refused
    WATCHDOG_HOLD = 0x0002  # watchdog tripped: holding until the next valid JointCommand
    FAULT = 0x0004          # a Fault was sent since the last applied JointCommand
    LIMIT = 0x0008          # the last applied target was clamped to the joint limits


class HelloFlags(IntFlag):
    """Hello.flags bits."""
    TAKEOVER = 0x01   # end another host's live session and take the device (an explicit operator decision)


class CapabilityFlags(IntFlag):
    """Capabilities.flags bits."""
    LOCKSTEP = 0x01   # each JointCommand advances the plant one control step, then one State replies
    SIMULATED = 0x02  # the plant is simulated and accepts Reset


class FaultCode(IntEnum):
    WATCHDOG = 1     # no JointCommand/Heartbeat within watchdog_ms: holding position
    LIMIT = 2        # a target was outside the joint limits and was clamped
    BAD_FRAME = 3    # the device dropped corrupt frames (reported at most once a second)
    ESTOP = 4        # a command was refused because the e-stop is engaged
    NO_SESSION = 5   # a frame other than Hello arrived before a handshake (e.g. after a device reset)
    BAD_COMMAND = 6  # JointCommand with the wrong joint count or a non-finite target: not applied
    VERSION = 7      # Hello carried a protocol version the device does not speak
    UNSUPPORTED = 8  # the message is valid but the device does not support it (e.g. Reset on hardware)
    INTERNAL = 9     # firmware error
    SESSION_BUSY = 10  # Hello refused: another host's session is alive (send it with takeover to end that one)
    IMPLAUSIBLE = 11   # JointCommand refused: a target jumps more than max_step from the device's current target


class AckResult(IntEnum):
    OK = 0
    REJECTED = 1


def _f32(values: object, what: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, as a cast does
            arr = np.array(values, dtype="<f4").reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("encode", f"{what} must be a 1-D sequence of floats ({exc})") from None
    arr.setflags(write=False)
    return arr


def _u(value: int, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < (1 << bits):
        raise ProtocolError("encode", f"{what} must be an integer in [0, {(1 << bits) - 1}], got {value!r}")
    return int(value)


def _str_bytes(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("encode", f"{what} must be a str, got {type(text).__name__}")
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ProtocolError("encode", f"{what} is {len(raw)} bytes of UTF-8; the limit is 255")
    return raw


class _Reader:
    """Bounds-checked little-endian reads; every failure is a ProtocolError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("length", f"{self.what} payload too short ({len(self.data)} bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u8(self) -> int:
        return self.take(1)[0]

    def f32s(self, n: int) -> np.ndarray:
        arr = np.frombuffer(self.take(4 * n), dtype="<f4").copy()
        arr.setflags(write=False)
        return arr

    def text(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("payload", f"{self.what} has a string that is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(
                "length", f"{self.what} payload has {len(self.data) - self.pos} trailing bytes")


class _Message:
    TYPE: ClassVar[MsgType]

    def encode_payload(self) -> bytes:  # pragma: no cover - every message overrides
        raise NotImplementedError

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Message":  # pragma: no cover
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        try:
            return self.encode_payload() == other.encode_payload()  # type: ignore[union-attr]
        except ProtocolError:
            return self is other

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, eq=False)
class Hello(_Message):
    """Host opens a session. The device answers with Capabilities echoing `nonce`.

    session_token: random per host link; the device belongs to one token at a time. takeover: end
    another host's live session instead of being refused with Fault(SESSION_BUSY)."""
    TYPE: ClassVar[MsgType] = MsgType.HELLO
    protocol_version: int = PROTOCOL_VERSION
    nonce: int = 0
    session_token: int = 0
    takeover: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "takeover", bool(self.takeover))

    def encode_payload(self) -> bytes:
        return struct.pack("<BIQB", _u(self.protocol_version, 8, "protocol_version"), _u(self.nonce, 32, "nonce"),
                           _u(self.session_token, 64, "session_token"),
                           int(HelloFlags.TAKEOVER) if self.takeover else 0)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Hello":
        r = _Reader(payload, "Hello")
        version, nonce, token, flags = r.unpack("BIQB")
        r.end()
        if flags & ~int(HelloFlags.TAKEOVER):
            raise ProtocolError("payload", f"Hello reserved flag bits set (0x{flags:02x})")
        return cls(version, nonce, token, bool(flags & HelloFlags.TAKEOVER))


@dataclass(frozen=True, eq=False)
class Capabilities(_Message):
    """What the device is: joints, limits, sensors, watchdog. Reply to Hello."""
    TYPE: ClassVar[MsgType] = MsgType.CAPABILITIES
    firmware_version: str
    joint_names: tuple[str, ...]
    lower: np.ndarray           # float32[n] position lower limits
    upper: np.ndarray           # float32[n] position upper limits
    max_velocity: np.ndarray    # float32[n] units/s; 0 = the device does not limit velocity
    extra_names: tuple[str, ...] = ()
    watchdog_ms: int = 0        # 0 = no watchdog
    state_period_us: int = 0    # nominal State streaming period; 0 = only on request/command
    flags: int = 0              # CapabilityFlags
    nonce: int = 0              # echo of Hello.nonce
    protocol_version: int = PROTOCOL_VERSION
    # float32[n]: the largest change of the target one JointCommand may make; 0 = the device does not
    # limit it (hosts treat 0 as unknown). None here means all zeros.
    max_step: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "extra_names", tuple(self.extra_names))
        if self.max_step is None:
            object.__setattr__(self, "max_step", np.zeros(len(self.joint_names), np.float32))
        for name in ("lower", "upper", "max_velocity", "max_step"):
            object.__setattr__(self, name, _f32(getattr(self, name), name))

    @property
    def joint_count(self) -> int:
        return len(self.joint_names)

    @property
    def extra_count(self) -> int:
        return len(self.extra_names)

    @property
    def lockstep(self) -> bool:
        return bool(self.flags & CapabilityFlags.LOCKSTEP)

    def encode_payload(self) -> bytes:
        n = len(self.joint_names)
        if not (len(self.lower) == len(self.upper) == len(self.max_velocity) == len(self.max_step) == n):
            raise ProtocolError("encode", "Capabilities needs one name, lower, upper, max_velocity and max_step "
                                          "per joint")
        out = bytearray(struct.pack(
            "<BIBHIBB", _u(self.protocol_version, 8, "protocol_version"), _u(self.nonce, 32, "nonce"),
            _u(int(self.flags), 8, "flags"), _u(self.watchdog_ms, 16, "watchdog_ms"),
            _u(self.state_period_us, 32, "state_period_us"), _u(n, 8, "joint count"),
            _u(len(self.extra_names), 8, "extra count")))
        fw = _str_bytes(self.firmware_version, "firmware_version")
        out += bytes([len(fw)]) + fw
        for i, name in enumerate(self.joint_names):
            out += struct.pack("<4f", self.lower[i], self.upper[i], self.max_velocity[i], self.max_step[i])
            raw = _str_bytes(name, f"joint name {i}")
            out += bytes([len(raw)]) + raw
        for i, name in enumerate(self.extra_names):
            raw = _str_bytes(name, f"extra name {i}")
            out += bytes([len(raw)]) + raw
        return bytes(out)

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Capabilities":
        r = _Reader(payload, "Capabilities")
        version, nonce, flags, watchdog_ms, period_us, n, k = r.unpack("BIBHIBB")
        firmware = r.text()
        lower, upper, vmax, steps, names = [], [], [], [], []
        for _ in range(n):
            lo, hi, vm, ms = r.unpack("4f")
            lower.append(lo)
            upper.append(hi)
            vmax.append(vm)
            steps.append(ms)
            names.append(r.text())
        extras = tuple(r.text() for _ in range(k))
        r.end()
        return cls(firmware, tuple(names), lower, upper, vmax, extras, watchdog_ms, period_us, flags, nonce, version,
                   steps)


@dataclass(frozen=True, eq=False)
class State(_Message):
    """Device state sample. `seq` and `rx_time` are host-side metadata, not on the wire."""
    TYPE: ClassVar[MsgType] = MsgType.STATE
    timestamp_us: int
    positions: np.ndarray       # float32[n]
    extras: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # float32[k]
    flags: int = 0              # StatusFlags
    ack_seq: int = 0            # seq of the last JointCommand/Reset the device applied
    seq: int = field(default=-1, compare=False)           # frame sequence number (host side)
    rx_time: float = field(default=math.nan, compare=False)  # host time.monotonic() at receipt

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", _f32(self.positions, "positions"))
        object.__setattr__(self, "extras", _f32(self.extras, "extras"))

    def has(self, flag: StatusFlags) -> bool:
        return bool(self.flags & flag)

    def encode_payload(self) -> bytes:
        n, k = len(self.positions), len(self.extras)
        return struct.pack(
            "<QHHBB", _u(self.timestamp_us, 64, "timestamp_us"), _u(int(self.flags), 16, "flags"),
            _u(self.ack_seq, 16, "ack_seq"), _u(n, 8, "joint count"), _u(k, 8, "extra count"),
        ) + self.positions.tobytes() + self.extras.tobytes()

    @classmethod
    def decode_payload(cls, payload: bytes) -> "State":
        r = _Reader(payload, "State")
        ts, flags, ack, n, k = r.unpack("QHHBB")
        if len(payload) != 14 + 4 * (n + k):
            raise ProtocolError("length", f"State with {n} joints and {k} extras must be {14 + 4 * (n + k)} "
                                          f"bytes, got {len(payload)}")
        return cls(ts, r.f32s(n), r.f32s(k), flags, ack)


@dataclass(frozen=True, eq=False)
class JointCommand(_Message):
    """Position targets. valid=False: no new target, keep the current one (still feeds the watchdog)."""
    TYPE: ClassVar[MsgType] = MsgType.JOINT_COMMAND
    targets: np.ndarray  # float32[n]
    valid: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", _f32(self.targets, "targets"))
        object.__setattr__(self, "valid", bool(self.valid))

    def encode_payload(self) -> bytes:
        return struct.pack("<BB", 1 if self.valid else 0, _u(len(self.targets), 8, "joint count")) + \
            self.targets.tobytes()

    @classmethod
    def decode_payload(cls, payload: bytes) -> "JointCommand":
        r = _Reader(payload, "JointCommand")
        flags, n = r.unpack("BB")
        if flags & ~1:
            raise ProtocolError("payload", f"JointCommand reserved flag bits set (0x{flags:02x})")
        targets = r.f32s(n)
        r.end()
        return cls(targets, bool(flags & 1))


@dataclass(frozen=True, eq=False)
class Heartbeat(_Message):
    """Keeps the device watchdog fed when the host has no new target. Empty payload."""
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Heartbeat":
        _Reader(payload, "Heartbeat").end()
        return cls()


@dataclass(frozen=True, eq=False)
class EStop(_Message):
    """engage=True: hold position and refuse commands until released. Acked."""
    TYPE: ClassVar[MsgType] = MsgType.ESTOP
    engage: bool = True

    def encode_payload(self) -> bytes:
        return bytes([1 if self.engage else 0])

    @classmethod
    def decode_payload(cls, payload: bytes) -> "EStop":
        r = _Reader(payload, "EStop")
        value = r.u8()
        r.end()
        if value > 1:
            raise ProtocolError("payload", f"EStop engage byte must be 0 or 1, got {value}")
        return cls(bool(value))


@dataclass(frozen=True, eq=False)
class Fault(_Message):
    """Device reports a fault. Unknown codes decode as plain ints (forward compatible)."""
    TYPE: ClassVar[MsgType] = MsgType.FAULT
    code: int
    text: str = ""

    def encode_payload(self) -> bytes:
        raw = _str_bytes(self.text, "fault text")
        return bytes([_u(int(self.code), 8, "fault code"), len(raw)]) + raw

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Fault":
        r = _Reader(payload, "Fault")
        code = r.u8()
        text = r.text()
        r.end()
        try:
            code = FaultCode(code)
        except ValueError:
            pass
        return cls(code, text)


@dataclass(frozen=True, eq=False)
class Reset(_Message):
    """Simulation only: reset the plant with `seed`; optional initial plant state. Acked, then a State."""
    TYPE: ClassVar[MsgType] = MsgType.RESET
    seed: int = 0
    initial_state: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # float32[k]

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_state", _f32(self.initial_state, "initial_state"))

    def encode_payload(self) -> bytes:
        return struct.pack("<QB", _u(self.seed, 64, "seed"), _u(len(self.initial_state), 8, "initial state length")) \
            + self.initial_state.tobytes()

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Reset":
        r = _Reader(payload, "Reset")
        seed, k = r.unpack("QB")
        state = r.f32s(k)
        r.end()
        return cls(seed, state)


@dataclass(frozen=True, eq=False)
class Ack(_Message):
    """Device confirms an EStop or Reset frame (by its type and seq)."""
    TYPE: ClassVar[MsgType] = MsgType.ACK
    acked_type: int
    acked_seq: int
    result: int = AckResult.OK

    def encode_payload(self) -> bytes:
        return struct.pack("<BHB", _u(int(self.acked_type), 8, "acked_type"), _u(self.acked_seq, 16, "acked_seq"),
                           _u(int(self.result), 8, "result"))

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Ack":
        r = _Reader(payload, "Ack")
        acked_type, acked_seq, result = r.unpack("BHB")
        r.end()
        return cls(acked_type, acked_seq, result)


@dataclass(frozen=True, eq=False)
class StatusRequest(_Message):
    """Host asks for DeviceStatus. Empty payload."""
    TYPE: ClassVar[MsgType] = MsgType.STATUS_REQUEST

    def encode_payload(self) -> bytes:
        return b""

    @classmethod
    def decode_payload(cls, payload: bytes) -> "StatusRequest":
        _Reader(payload, "StatusRequest").end()
        return cls()


@dataclass(frozen=True, eq=False)
class Goodbye(_Message):
    """The host ends its session (SerialLink.close), so the next host need not wait for it to time out.
    Ignored unless session_token is the current session's."""
    TYPE: ClassVar[MsgType] = MsgType.GOODBYE
    session_token: int = 0

    def encode_payload(self) -> bytes:
        return struct.pack("<Q", _u(self.session_token, 64, "session_token"))

    @classmethod
    def decode_payload(cls, payload: bytes) -> "Goodbye":
        r = _Reader(payload, "Goodbye")
        (token,) = r.unpack("Q")
        r.end()
        return cls(token)


# DeviceStatus counters, in wire order; each a u32 that wraps.
DEVICE_STATUS_FIELDS = (
    "uptime_ms", "boots", "rx_frames_ok", "rx_bad_cobs", "rx_bad_crc", "rx_bad_other", "rx_seq_gaps",
    "commands_applied", "commands_rejected", "commands_duplicate", "heartbeats", "watchdog_trips",
    "limit_clamps", "tx_frames", "tx_dropped", "tx_corrupted", "tx_overflow", "plant_resets",
    "commands_implausible", "sessions_refused",  # v2
)


@dataclass(frozen=True, eq=False)
class DeviceStatus(_Message):
    """Device-side counters (diagnostics and tests). tx_dropped/tx_corrupted count injected faults."""
    TYPE: ClassVar[MsgType] = MsgType.DEVICE_STATUS
    uptime_ms: int = 0
    boots: int = 0
    rx_frames_ok: int = 0
    rx_bad_cobs: int = 0
    rx_bad_crc: int = 0
    rx_bad_other: int = 0
    rx_seq_gaps: int = 0
    commands_applied: int = 0
    commands_rejected: int = 0
    commands_duplicate: int = 0
    heartbeats: int = 0
    watchdog_trips: int = 0
    limit_clamps: int = 0
    tx_frames: int = 0
    tx_dropped: int = 0
    tx_corrupted: int = 0
    tx_overflow: int = 0
    plant_resets: int = 0
    commands_implausible: int = 0  # JointCommands refused with Fault(IMPLAUSIBLE)
    sessions_refused: int = 0      # Hellos refused with Fault(SESSION_BUSY)

    def encode_payload(self) -> bytes:
        return struct.pack(f"<{len(DEVICE_STATUS_FIELDS)}I",
                           *(_u(getattr(self, f), 32, f) for f in DEVICE_STATUS_FIELDS))

    @classmethod
    def decode_payload(cls, payload: bytes) -> "DeviceStatus":
        r = _Reader(payload, "DeviceStatus")
        values = r.unpack(f"{len(DEVICE_STATUS_FIELDS)}I")
        r.end()
        return cls(*values)


Message = Union[Hello, Capabilities, State, JointCommand, Heartbeat, EStop, Fault, Reset, Ack,
                StatusRequest, DeviceStatus, Goodbye]

MESSAGE_CLASSES: dict[int, type] = {cls.TYPE: cls for cls in (
    Hello, Capabilities, State, JointCommand, Heartbeat, EStop, Fault, Reset, Ack, StatusRequest, DeviceStatus,
    Goodbye)}
