"""Make a connected robot from a spec string.

    serial:/dev/ttyACM0     a microcontroller speaking docs/protocol.md (firmware_bridge.serial_link)
    emulator                start the emulated Push-T device (real-time) in its own process on a pty
    emulator-lockstep       the same, in lock-step (one control step per command)
    franka:HOST             a Franka arm through firmware_bridge.franka (pylibfranka; imported lazily)

Every failure a user can cause (bad spec, missing port, handshake failure) is a RobotSpecError or a
firmware_bridge LinkError whose str() is one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

SPEC_HELP = "serial:/dev/ttyACM0, emulator, emulator-lockstep or franka:HOST"


class RobotSpecError(ValueError):
    """A --robot spec that cannot name a robot (one-line message)."""


@dataclass
class RobotHandle:
    """A connected robot plus whatever was started for it (an emulator process)."""
    spec: str
    robot: Any                      # satisfies firmware_bridge.robot.Robot
    capabilities: Any               # firmware_bridge.protocol.Capabilities
    emulator: Any = None            # firmware_bridge.emulator.EmulatorProcess when we started one
    info: dict = field(default_factory=dict)

    @property
    def lockstep(self) -> bool:
        return bool(getattr(self.capabilities, "lockstep", False))

    @property
    def simulated(self) -> bool:
        return bool(int(getattr(self.capabilities, "flags", 0)) & 0x02)

    def close(self) -> None:
        try:
            self.robot.close()
        finally:
            if self.emulator is not None:
                self.emulator.stop()

    def __enter__(self) -> "RobotHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_spec(spec: str) -> tuple[str, str]:
    """'serial:/dev/x' -> ('serial', '/dev/x'); 'emulator' -> ('emulator', ''); RobotSpecError otherwise."""
    spec = (spec or "").strip()
    if spec in ("emulator", "emulator-realtime"):
        return "emulator", "realtime"
    if spec == "emulator-lockstep":
        return "emulator", "lockstep"
    kind, sep, arg = spec.partition(":")
    if sep and kind == "serial" and arg:
        return "serial", arg
    if sep and kind == "franka" and arg:
        return "franka", arg
    raise RobotSpecError(f"bad --robot spec {spec!r}: use {SPEC_HELP}")


def check_spec(spec: str) -> None:
    """Raise RobotSpecError for a malformed spec or a serial port that does not exist (connects nothing)."""
    kind, arg = parse_spec(spec)
    if kind == "serial" and "://" not in arg and not os.path.exists(arg):
        raise RobotSpecError(f"serial port {arg} does not exist (is the device plugged in?)")


def make_robot(spec: str, *, state_timeout_s: float = 0.5, emulator_options: Optional[dict] = None,
               link_options: Optional[dict] = None) -> RobotHandle:
    """Connect to the robot a spec names (starting an emulator when asked). The caller closes it."""
    kind, arg = parse_spec(spec)
    if kind == "franka":
        return _make_franka(spec, arg)
    from firmware_bridge.serial_link import SerialLink  # pyserial; the robot extra

    emulator = None
    if kind == "emulator":
        from firmware_bridge.emulator import EmulatorError, start_emulator
        opts = dict(emulator_options or {})
        opts["mode"] = arg
        try:
            emulator = start_emulator(**opts)
        except EmulatorError as exc:
            raise RobotSpecError(f"cannot start the emulator: {str(exc).splitlines()[0]}") from None
        port = emulator.port
    else:
        check_spec(spec)
        port = arg
    link = SerialLink(port, state_timeout_s=state_timeout_s, **(link_options or {}))
    try:
        caps = link.connect()
    except Exception:
        link.close()
        if emulator is not None:
            emulator.stop()
        raise
    return RobotHandle(spec, link, caps, emulator, {"port": port})


def _make_franka(spec: str, host: str) -> RobotHandle:
    # pylibfranka is imported by FrankaRobot itself, only when it connects (the Franka's controller PC)
    from firmware_bridge.franka import FrankaRobot

    try:
        robot = FrankaRobot(host)
    except ValueError as exc:  # a bad IMLE_FRANKA_ARM / _REALTIME / _LATE_COMMANDS: the user's to fix
        raise RobotSpecError(f"--robot {spec}: {exc}") from None
    try:
        caps = robot.connect()  # FrankaImportError / HandshakeError (LinkErrors, one line) when it cannot
    except Exception:
        robot.close()
        raise
    return RobotHandle(spec, robot, caps, None, {"host": host})
