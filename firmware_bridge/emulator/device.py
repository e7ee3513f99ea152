"""The device side of the protocol, as firmware would implement it: session ownership, watchdog,
limits, plausibility, e-stop, lock-step, counters. Transport-free: feed it received bytes and the time, it calls
`transmit(bytes)`. The caller owns the clock, so tests can drive it without a pty or sleeps.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Optional, TextIO

import numpy as np

from ..protocol import (PROTOCOL_VERSION, Ack, AckResult, Capabilities, CapabilityFlags, DeviceStatus, EStop, Fault,
                        FaultCode, Frame, FrameDecoder, Goodbye, Heartbeat, Hello, JointCommand, Message, MsgType,
                        Reset, State, StatusFlags, StatusRequest, encode_frame, encode_raw_frame)
from .faults import FaultInjector
from .plants.base import Plant

FIRMWARE_VERSION = "0.2.0"
MALFORMED_CAPS = ("truncated", "invalid")
# Hostile States for fault campaigns (what a broken or malicious device might send): one joint fewer,
# one more, no extras, a NaN position, a 1e30 position.
HOSTILE_STATES = ("short", "long", "noextras", "nan", "huge")
# Plain ints: IntFlag arithmetic costs microseconds per operation on the command path.
_ESTOP, _HOLD, _FAULT, _LIMIT = (int(f) for f in (StatusFlags.ESTOP, StatusFlags.WATCHDOG_HOLD, StatusFlags.FAULT,
                                                  StatusFlags.LIMIT))


@dataclass
class DeviceConfig:
    mode: str = "realtime"            # "realtime" | "lockstep"
    watchdog_ms: int = 300            # realtime only; 0 disables
    state_hz: float = 50.0            # State stream rate (keep-alive rate in lock-step)
    firmware_version: Optional[str] = None  # None: "imle-emulator VERSION (PLANT)"
    malformed_caps: Optional[str] = None  # reply to Hello with broken Capabilities: "truncated" | "invalid"
    max_step: Optional[float] = None  # plausibility limit per command and joint; None: the plant's; 0: none

    def __post_init__(self) -> None:
        if self.mode not in ("realtime", "lockstep"):
            raise ValueError(f"mode must be 'realtime' or 'lockstep', got {self.mode!r}")
        if self.malformed_caps not in (None, *MALFORMED_CAPS):
            raise ValueError(f"malformed_caps must be one of {MALFORMED_CAPS}, got {self.malformed_caps!r}")
        if not self.state_hz > 0:
            raise ValueError(f"state_hz must be > 0, got {self.state_hz}")
        if self.max_step is not None and not (math.isfinite(self.max_step) and self.max_step >= 0):
            raise ValueError(f"max_step must be a finite number >= 0, got {self.max_step}")

    @property
    def lockstep(self) -> bool:
        return self.mode == "lockstep"


class DeviceCore:
    """One emulated microcontroller. Not thread-safe: drive it from one loop."""

    FAULT_REPEAT_S = {FaultCode.NO_SESSION: 0.25, FaultCode.ESTOP: 0.5, FaultCode.LIMIT: 1.0,
                      FaultCode.BAD_FRAME: 1.0}
    SESSION_MIN_ALIVE_S = 1.0  # a session is alive while its host sent a valid frame within max(this, 2 x watchdog)

    def __init__(self, config: DeviceConfig, plant: Plant, transmit: Callable[[bytes], bool], now: float,
                 faults: Optional[FaultInjector] = None, command_log: Optional[TextIO] = None) -> None:
        self.config = config
        self.plant = plant
        self.firmware_version = config.firmware_version or f"imle-emulator {FIRMWARE_VERSION} ({plant.kind})"
        self._transmit = transmit   # returns False when the TX queue overflowed
        self.faults = faults or FaultInjector()
        self.command_log = command_log
        self.t0 = now
        self.boots = 0
        self.counters = {name: 0 for name in (
            "rx_seq_gaps", "commands_applied", "commands_rejected", "commands_duplicate", "heartbeats",
            "watchdog_trips", "limit_clamps", "tx_frames", "tx_overflow", "plant_resets", "commands_implausible",
            "sessions_refused")}
        self.decoder = FrameDecoder()
        self.silent_until = -math.inf
        self._now = now
        self.first_session_time: Optional[float] = None
        # The e-stop latch lives outside the firmware's RAM (a hardware latch / retained memory): a
        # firmware reset keeps it; only EStop(engage=False) releases it.
        self.estop = False
        n = len(plant.joint_names)
        step = plant.max_step if config.max_step is None else np.full(n, config.max_step, np.float32)
        self.max_step = np.asarray(step, np.float32).reshape(n)
        self.max_velocity = (np.asarray(plant.max_velocity, np.float32).reshape(n) if config.max_step is None
                             else self.max_step / np.float32(plant.control_dt))
        self._step_limit = np.where(self.max_step > 0, self.max_step.astype(np.float64), np.inf)
        self._lower = np.asarray(plant.lower, np.float32)
        self._upper = np.asarray(plant.upper, np.float32)
        # Called with (seq, targets) for every applied JointCommand that carried targets (benchmarks).
        self.on_applied: Optional[Callable[[int, np.ndarray], None]] = None
        self.hostile_kind: Optional[str] = None  # the next `hostile_left` States are of this kind
        self.hostile_left = 0
        self.hostile_sent = 0
        self._boot(now)

    # ----------------------------------------------------------------- lifecycle
    def _boot(self, now: float) -> None:
        """Power-on / reset: no session, sequence numbers from 0, holding position."""
        self.boots += 1
        self.session = False
        self.session_token: Optional[int] = None
        self.last_host_rx = -math.inf     # when the session's host last sent a valid frame
        self.tx_seq = 0
        self.rx_expected: Optional[int] = None
        self.ack_seq = 0
        self.last_cmd_seq: Optional[int] = None
        self.flags = _ESTOP if self.estop else 0
        self.watchdog_armed = False
        self.last_feed = now
        self.target = self.plant.brake()
        self.sim_steps = 0
        self.next_physics = now + self.plant.physics_dt
        self.next_state = now
        self._fault_sent: dict[int, float] = {}
        self._errors_seen = self.decoder.errors_total
        self.decoder.reset()

    def reboot(self, now: float) -> None:
        """Emulate a firmware reset: the plant keeps its physical state, the firmware forgets everything."""
        self._now = now
        self._boot(now)

    def send_hostile_states(self, kind: str, count: int) -> None:
        """Make the next `count` States hostile (`kind` in HOSTILE_STATES), then normal again.
        Only what goes on the wire changes: the plant and the device's own reference do not."""
        if kind not in HOSTILE_STATES:
            raise ValueError(f"hostile State kind must be one of {', '.join(HOSTILE_STATES)}, got {kind!r}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 1_000_000_000:
            raise ValueError(f"hostile State count must be an integer in [0, 1e9], got {count!r}")
        self.hostile_kind, self.hostile_left = (kind, count) if count else (None, 0)

    def go_silent(self, now: float, seconds: float) -> None:
        """Stop transmitting (no frames generated, sequence numbers do not advance) for `seconds`."""
        self._now = now
        self.silent_until = now + seconds

    # ----------------------------------------------------------------- inputs
    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the host."""
        self._now = now
        for frame in self.decoder.feed(self.faults.on_rx(data)):
            self._on_frame(frame, now)
        if self.session and self.decoder.errors_total > self._errors_seen:
            n = self.decoder.errors_total - self._errors_seen
            if self._fault(FaultCode.BAD_FRAME, f"dropped {n} corrupt frame(s)", now, latch=False):
                self._errors_seen = self.decoder.errors_total

    def tick(self, now: float) -> None:
        """Advance the device to `now`: physics (real-time), watchdog, State streaming."""
        self._now = now
        if not self.config.lockstep:
            steps = 0
            while now >= self.next_physics:
                if steps >= 20:  # more than 200 ms behind (machine stalled): skip, don't spiral
                    self.next_physics = now + self.plant.physics_dt
                    break
                self.plant.substep(self.target)
                self.next_physics += self.plant.physics_dt
                steps += 1
            self._check_watchdog(now)
        if self.session and now >= self.next_state:
            self._send_state(now)
            period = 1.0 / self.config.state_hz
            self.next_state += period
            if self.next_state < now:
                self.next_state = now + period

    def next_deadline(self) -> float:
        """The next time tick() has work to do."""
        deadlines = [self.next_state if self.session else math.inf]
        if not self.config.lockstep:
            deadlines.append(self.next_physics)
            if self.watchdog_armed and self.config.watchdog_ms > 0:
                deadlines.append(self.last_feed + self.config.watchdog_ms / 1000.0)
        return min(deadlines)

    def session_alive(self, now: float) -> bool:
        """A session whose host sent a valid frame within max(1 s, 2 x watchdog): another host's Hello is refused."""
        window = max(self.SESSION_MIN_ALIVE_S, 2.0 * self.config.watchdog_ms / 1000.0)
        return self.session and now - self.last_host_rx <= window

    # ----------------------------------------------------------------- protocol
    def _on_frame(self, frame: Frame, now: float) -> None:
        msg, seq = frame.message, frame.seq
        if isinstance(msg, Hello) and self._refuse_hello(msg, now):
            return  # another host's Hello: not part of this session's sequence or liveness
        if self.rx_expected is not None:
            gap = (frame.seq - self.rx_expected) & 0xFFFF
            if 0 < gap < 0x8000:
                self.counters["rx_seq_gaps"] += gap
        self.rx_expected = (frame.seq + 1) & 0xFFFF

        if isinstance(msg, Hello):
            self._on_hello(msg, seq, now)
            return
        if not isinstance(msg, (JointCommand, Heartbeat, EStop, Reset, StatusRequest, Goodbye)):
            return  # a device->host message type arriving at the device: ignore
        if self.session:
            self.last_host_rx = now  # frames carry no token: on one wire, they are the session host's
        if isinstance(msg, Goodbye):
            self._on_goodbye(msg, now)
            return
        if isinstance(msg, EStop):  # safety first: honoured with or without a session
            self._on_estop(msg, seq, now)
            return
        if not self.session:
            if isinstance(msg, JointCommand):
                self.counters["commands_rejected"] += 1
            self._fault(FaultCode.NO_SESSION, "no session: send Hello", now, latch=False)
            return
        if isinstance(msg, JointCommand):
            self._on_command(msg, seq, now)
        elif isinstance(msg, Heartbeat):
            self.counters["heartbeats"] += 1
            self._feed_watchdog(now)
        elif isinstance(msg, Reset):
            self._on_reset(msg, seq, now)
        elif isinstance(msg, StatusRequest):
            self._send(self.status(now))

    def _refuse_hello(self, msg: Hello, now: float) -> bool:
        """One owner per device: a Hello with another token while the session is alive is refused
        (Fault SESSION_BUSY, the session untouched) unless it asks for a takeover."""
        if msg.protocol_version != PROTOCOL_VERSION or msg.takeover or not self.session_alive(now) \
                or msg.session_token == self.session_token:
            return False
        self.counters["sessions_refused"] += 1
        self._fault(FaultCode.SESSION_BUSY,
                    f"device in use by another host's session (last frame {now - self.last_host_rx:.2f} s ago); "
                    f"Hello with takeover to end it", now, latch=False)
        return True

    def _on_hello(self, msg: Hello, seq: int, now: float) -> None:
        if msg.protocol_version != PROTOCOL_VERSION:
            self._fault(FaultCode.VERSION, f"host protocol {msg.protocol_version}, device {PROTOCOL_VERSION}",
                        now, latch=False)
            return
        if msg.session_token != self.session_token and self.session_token is not None:
            # Another host (after a takeover or a dead session): it must not inherit the old host's target.
            self.target = self.plant.brake()
        self.session = True
        self.session_token = msg.session_token
        self.last_host_rx = now
        if self.first_session_time is None:
            self.first_session_time = now
        self.ack_seq = seq  # so ack_seq always lives in this host's sequence space
        self.last_cmd_seq = None
        self.watchdog_armed = False
        self._send_capabilities(msg.nonce)
        self._send_state(now)
        self.next_state = now + 1.0 / self.config.state_hz

    def _on_goodbye(self, msg: Goodbye, now: float) -> None:
        if not self.session or msg.session_token != self.session_token:
            return  # a stale or foreign Goodbye does not end this session
        self.session = False        # silent until the next Hello, from any host
        self.session_token = None
        self.watchdog_armed = False
        self.target = self.plant.brake()

    def _on_command(self, msg: JointCommand, seq: int, now: float) -> None:
        if seq == self.last_cmd_seq:
            self.counters["commands_duplicate"] += 1  # never act on the same command twice
            return
        if self.estop:
            self.counters["commands_rejected"] += 1
            self._fault(FaultCode.ESTOP, "e-stop engaged: command refused", now)
            return
        n = len(self.plant.joint_names)
        if len(msg.targets) != n or (msg.valid and not np.isfinite(msg.targets).all()):
            self.counters["commands_rejected"] += 1
            self._fault(FaultCode.BAD_COMMAND, f"JointCommand needs {n} finite targets, got "
                                               f"{np.array2string(msg.targets, precision=3)}", now)
            return
        if msg.valid:
            # Plausibility: no single command may move the target more than max_step (0 = unlimited).
            # The reference is the device's own target: after a hold, e-stop or reset, the held position.
            step = np.abs(msg.targets.astype(np.float64) - self.target)
            over = step > self._step_limit
            if over.any():
                j = int(np.argmax(over))
                self.counters["commands_rejected"] += 1
                self.counters["commands_implausible"] += 1
                self._fault(FaultCode.IMPLAUSIBLE, f"joint {j} ({self.plant.joint_names[j]}) target "
                                                   f"{float(msg.targets[j]):.6g} is {float(step[j]):.6g} from the "
                                                   f"current target {float(self.target[j]):.6g}; max_step "
                                                   f"{float(self.max_step[j]):g}: refused", now)
                return
        self._feed_watchdog(now)
        self.last_cmd_seq = seq
        if msg.valid:
            clamped = np.minimum(np.maximum(msg.targets, self._lower), self._upper)
            if (clamped == msg.targets).all():
                self.flags &= ~_LIMIT
            else:
                self.flags |= _LIMIT
                self.counters["limit_clamps"] += 1
                self._fault(FaultCode.LIMIT, f"target {msg.targets.tolist()} clamped to limits", now)
            self.target = clamped
            self.flags &= ~(_HOLD | _FAULT)
        self.ack_seq = seq
        self.counters["commands_applied"] += 1
        if msg.valid and self.on_applied is not None:
            self.on_applied(seq, msg.targets)
        if self.command_log is not None:
            self.command_log.write(json.dumps({"seq": seq, "valid": msg.valid, "t": round(now - self.t0, 6),
                                               "targets": [float(v) for v in msg.targets]}) + "\n")
            self.command_log.flush()
        if self.config.lockstep:
            self.plant.control_step(self.target)
            self.sim_steps += 1
            self._send_state(now)

    def _on_estop(self, msg: EStop, seq: int, now: float) -> None:
        if msg.engage:
            self.estop = True
            self.flags |= _ESTOP
            self.target = self.plant.brake()
        else:
            self.estop = False
            self.flags &= ~_ESTOP
        self._send(Ack(MsgType.ESTOP, seq, AckResult.OK))

    def _on_reset(self, msg: Reset, seq: int, now: float) -> None:
        try:
            self.plant.reset(msg.seed, msg.initial_state if len(msg.initial_state) else None)
        except ValueError as exc:
            self._send(Ack(MsgType.RESET, seq, AckResult.REJECTED))
            self._fault(FaultCode.BAD_COMMAND, str(exc), now)
            return
        self.counters["plant_resets"] += 1
        self.target = self.plant.brake()
        self.sim_steps = 0
        self.flags &= ~(_HOLD | _LIMIT | _FAULT)
        self.watchdog_armed = False
        self.ack_seq = seq
        self.next_physics = now + self.plant.physics_dt
        self._send(Ack(MsgType.RESET, seq, AckResult.OK))
        self._send_state(now)

    def _feed_watchdog(self, now: float) -> None:
        self.last_feed = now
        self.watchdog_armed = True

    def _check_watchdog(self, now: float) -> None:
        if not self.watchdog_armed or self.config.watchdog_ms <= 0 or not self.session:
            return
        elapsed = now - self.last_feed
        if elapsed * 1000.0 > self.config.watchdog_ms:
            self.watchdog_armed = False  # one trip (and one Fault) per silence
            self.target = self.plant.brake()
            self.flags |= _HOLD
            self.counters["watchdog_trips"] += 1
            self._fault(FaultCode.WATCHDOG, f"no command for {elapsed * 1000:.0f} ms "
                                            f"(watchdog {self.config.watchdog_ms} ms): holding position", now)
            self._send_state(now)  # report the hold at once

    # ----------------------------------------------------------------- outputs
    def timestamp_us(self, now: float) -> int:
        if self.config.lockstep:  # simulated time: one control step per applied command
            return self.sim_steps * int(round(self.plant.control_dt * 1e6))
        return int((now - self.t0) * 1e6)

    def _send_state(self, now: float) -> None:
        positions, extras = self.plant.positions(), self.plant.extras()
        if self.hostile_left > 0 and not self._is_silent():
            positions, extras = self._hostile(positions, extras)
        self._send(State(self.timestamp_us(now), positions, extras, int(self.flags), self.ack_seq))

    def _hostile(self, positions: np.ndarray, extras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kind = self.hostile_kind
        self.hostile_left -= 1
        self.hostile_sent += 1
        if self.hostile_left == 0:
            self.hostile_kind = None
        positions = np.array(positions, np.float32)
        if kind == "short":
            return positions[:-1], extras
        if kind == "long":
            return np.append(positions, positions[-1:]), extras
        if kind == "noextras":
            return positions, np.zeros(0, np.float32)
        positions[0] = np.nan if kind == "nan" else np.float32(1e30)
        return positions, extras

    def _send_capabilities(self, nonce: int) -> None:
        flags = CapabilityFlags.SIMULATED | (CapabilityFlags.LOCKSTEP if self.config.lockstep else 0)
        lower, upper = self.plant.lower, self.plant.upper
        if self.config.malformed_caps == "invalid":
            lower, upper = upper, lower  # lower > upper: decodes fine, makes no sense
        caps = Capabilities(
            self.firmware_version, self.plant.joint_names, lower, upper, self.max_velocity,
            self.plant.extra_names, watchdog_ms=0 if self.config.lockstep else self.config.watchdog_ms,
            state_period_us=int(round(1e6 / self.config.state_hz)), flags=int(flags), nonce=nonce,
            max_step=self.max_step)
        if self.config.malformed_caps == "truncated":
            # A well-formed frame (valid CRC) whose payload is 3 bytes short.
            self._put(encode_raw_frame(MsgType.CAPABILITIES, self._next_seq(), caps.encode_payload()[:-3]))
            return
        self._send(caps)

    def _fault(self, code: FaultCode, text: str, now: float, latch: bool = True) -> bool:
        """Send a Fault unless the same code was sent very recently. Returns whether it was sent."""
        repeat = self.FAULT_REPEAT_S.get(code, 0.0)
        if now - self._fault_sent.get(code, -math.inf) < repeat:
            return False
        self._fault_sent[code] = now
        if latch:
            self.flags |= _FAULT
        self._send(Fault(code, text[:255]))
        return True

    def _next_seq(self) -> int:
        seq = self.tx_seq
        self.tx_seq = (seq + 1) & 0xFFFF
        return seq

    def _send(self, msg: Message) -> None:
        if self._is_silent():
            return
        self._put(encode_frame(msg, self._next_seq()))

    def _put(self, frame: bytes) -> None:
        if self._is_silent():
            return
        wire = self.faults.on_tx(frame)
        if wire is None:
            return
        if self._transmit(wire):
            self.counters["tx_frames"] += 1
        else:
            self.counters["tx_overflow"] += 1

    def _is_silent(self) -> bool:
        return self._now < self.silent_until

    def status(self, now: float) -> DeviceStatus:
        c = self.counters
        errors = self.decoder.errors
        u32 = 0xFFFFFFFF
        return DeviceStatus(
            uptime_ms=int((now - self.t0) * 1000) & u32, boots=self.boots & u32,
            rx_frames_ok=self.decoder.frames_ok & u32, rx_bad_cobs=errors["cobs"] & u32,
            rx_bad_crc=errors["crc"] & u32,
            rx_bad_other=(self.decoder.errors_total - errors["cobs"] - errors["crc"]) & u32,
            rx_seq_gaps=c["rx_seq_gaps"] & u32, commands_applied=c["commands_applied"] & u32,
            commands_rejected=c["commands_rejected"] & u32, commands_duplicate=c["commands_duplicate"] & u32,
            heartbeats=c["heartbeats"] & u32, watchdog_trips=c["watchdog_trips"] & u32,
            limit_clamps=c["limit_clamps"] & u32, tx_frames=c["tx_frames"] & u32,
            tx_dropped=self.faults.tx_dropped & u32, tx_corrupted=self.faults.tx_corrupted & u32,
            tx_overflow=c["tx_overflow"] & u32, plant_resets=c["plant_resets"] & u32,
            commands_implausible=c["commands_implausible"] & u32, sessions_refused=c["sessions_refused"] & u32)
