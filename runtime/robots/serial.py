"""A microcontroller speaking docs/protocol.md over a serial port (firmware_bridge.serial_link)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

from runtime.robots.fields import RobotSpecError, check_positive, option
from runtime.robots.handle import ConnectContext, RobotHandle, RobotSettings

MAX_BAUDRATE = 100_000_000


@dataclass
class SerialConfig(RobotSettings):
    TYPE: ClassVar[str] = "serial"
    port: str = field(metadata=option("serial device of the microcontroller (/dev/ttyACM0) or a pyserial URL"))
    baudrate: int = field(default=1_000_000, metadata=option("serial baud rate (USB CDC devices ignore it)"))
    state_timeout_s: float = field(default=0.5, metadata=option(
        "no State for this long means the link is lost (it then reconnects)"))
    takeover: bool = field(default=False, metadata=option(
        "take the device over from another host's session that is still alive"))

    def __post_init__(self) -> None:
        if not self.port.strip():
            raise RobotSpecError("robot.port must name a serial device, got ''")
        if not 1 <= self.baudrate <= MAX_BAUDRATE:
            raise RobotSpecError(f"robot.baudrate must be in 1..{MAX_BAUDRATE}, got {self.baudrate}")
        check_positive(self.state_timeout_s, "robot.state_timeout_s", 60.0)

    def label(self) -> str:
        return f"serial:{self.port}"

    def check(self) -> None:
        if "://" not in self.port and not os.path.exists(self.port):
            raise RobotSpecError(f"serial port {self.port} does not exist (is the device plugged in?)")

    def connect(self, context: ConnectContext) -> RobotHandle:
        self.check()
        return connect_serial(self.label(), self.port, self.baudrate, self.state_timeout_s, self.takeover)


def connect_serial(label: str, port: str, baudrate: int, state_timeout_s: float, takeover: bool,
                   emulator: object = None) -> RobotHandle:
    from firmware_bridge.serial_link import SerialLink  # pyserial; the robot extra

    link = SerialLink(port, baudrate, state_timeout_s=state_timeout_s, takeover=takeover)
    try:
        caps = link.connect()  # HandshakeError / LinkError (one line) when it cannot
    except Exception:
        link.close()
        if emulator is not None:
            emulator.stop()  # type: ignore[attr-defined]
        raise
    return RobotHandle(label, link, caps, emulator, {"port": port})  # type: ignore[arg-type]
