"""The interface the runtime drives: any robot link (serial microcontroller, Franka bridge) satisfies it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from .protocol import Capabilities, CapabilityFlags, Fault, State


class LinkError(Exception):
    """A robot link failed. str(error) is one line, fit for a user."""


class HandshakeError(LinkError):
    """No valid Capabilities: the device is absent, mute, speaks another protocol version or sent nonsense."""


class LinkTimeout(LinkError):
    """An expected reply (State, Ack, DeviceStatus) did not arrive in time."""


@dataclass
class LinkStats:
    """A snapshot of link health counters. Links fill what applies to them."""
    frames_ok: int = 0                                   # frames received and decoded
    corrupt: dict[str, int] = field(default_factory=dict)  # frames dropped, by reason (protocol.REASONS)
    seq_gaps: int = 0             # frames missing in the device's sequence (lost on the wire or corrupt)
    seq_restarts: int = 0         # device sequence jumped backwards (stale or restarted device)
    states: int = 0               # State messages received
    faults: int = 0               # Fault messages received
    fault_codes: dict[str, int] = field(default_factory=dict)
    last_fault: Optional[Fault] = None
    tx_frames: int = 0            # frames written
    tx_errors: int = 0            # writes that failed or were skipped because the port was down
    handshakes: int = 0           # successful Hello -> Capabilities exchanges (connect included)
    reconnects: int = 0           # times the link came back after being lost (vanished, silent, device reset)
    port_reopens: int = 0         # times the port was reopened after vanishing
    vanished_events: int = 0      # port errors / device gone
    silent_events: int = 0        # no State for longer than the state timeout
    device_resets: int = 0        # device reported it lost the session (rebooted)
    last_state_age_s: Optional[float] = None  # host time since the latest State arrived
    # What the device said about our commands and itself (the operator must see these):
    refused: dict[str, int] = field(default_factory=dict)      # commands refused, by fault code name:
    #   ESTOP, BAD_COMMAND, IMPLAUSIBLE (from the device's Fault messages; ESTOP faults repeat at most 2/s)
    state_flags: dict[str, int] = field(default_factory=dict)  # States received with ESTOP / WATCHDOG_HOLD /
    #   FAULT / LIMIT set, by flag name
    faults_dropped: int = 0       # Fault messages take_faults() never returned (its queue overflowed)
    sessions_refused: int = 0     # handshakes the device refused (SESSION_BUSY: another host owns it)
    session_state: str = ""       # the link's session state now (SerialLink: SessionState name)

    @property
    def corrupt_total(self) -> int:
        return sum(self.corrupt.values())

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


@runtime_checkable
class Robot(Protocol):
    """What the runtime's control loop needs from a robot.

    connect() blocks until the robot is ready and says what it is; latest_state() never blocks;
    send_command() returns an id usable with wait_state(after_seq=...) (None when it could not send);
    estop() returns True only when the robot confirmed it (callers retry until then or their deadline);
    take_faults() returns the Fault messages received since the last call (never blocks; bounded).
    """

    def connect(self) -> Capabilities: ...

    def latest_state(self) -> Optional[State]: ...

    def wait_state(self, after_seq: Optional[int] = None, timeout: float = 1.0) -> State: ...

    def send_command(self, targets: np.ndarray, valid: bool = True) -> Optional[int]: ...

    def estop(self, engage: bool = True) -> bool: ...

    def take_faults(self) -> list[Fault]: ...

    def close(self) -> None: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def stats(self) -> LinkStats: ...


@runtime_checkable
class SimulatedRobot(Robot, Protocol):
    """A robot whose plant is simulated (Capabilities flag SIMULATED): it can be reset to a seeded start,
    and in lock-step (flag LOCKSTEP) one step() is one control step answered by the State it produced.

    The runtime checks both this protocol (isinstance) and the device's flags: a link class may
    implement the methods while the device behind it is real hardware (which refuses Reset).
    """

    def reset_plant(self, seed: int, initial_state: Optional[np.ndarray] = None, timeout: float = 1.0,
                    retries: int = 3) -> State: ...

    def step(self, targets: np.ndarray, timeout: float = 1.0) -> State: ...


def is_simulated(robot: Robot, capabilities: Capabilities) -> bool:
    """The device says its plant is simulated and the link can reset it."""
    return bool(capabilities.flags & CapabilityFlags.SIMULATED) and isinstance(robot, SimulatedRobot)
