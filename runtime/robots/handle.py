"""What connecting a robot configuration gives: a RobotHandle (the robot, its Capabilities, what was started)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from firmware_bridge.protocol import Capabilities, CapabilityFlags
from firmware_bridge.robot import Robot

if TYPE_CHECKING:
    from firmware_bridge.emulator import EmulatorProcess


@dataclass
class RobotHandle:
    """A connected robot plus whatever was started for it (an emulator process)."""
    spec: str                        # how the operator named it (for messages and the summary)
    robot: Robot
    capabilities: Capabilities
    emulator: Optional["EmulatorProcess"] = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def lockstep(self) -> bool:
        return self.capabilities.lockstep

    @property
    def simulated(self) -> bool:
        return bool(self.capabilities.flags & CapabilityFlags.SIMULATED)

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


@dataclass
class ConnectContext:
    """What the run knows when it connects (an emulator streams States at least once per period)."""
    period_s: Optional[float] = None
    package: Optional[str] = None  # the model package being run: the emulator builds a plant that fits it


class RobotSettings:
    """Base of the robot configuration dataclasses (runtime.robots.REGISTRY)."""
    TYPE: ClassVar[str] = ""

    def label(self) -> str:
        """The robot as the operator would name it (serial:/dev/x, franka:HOST, emulator)."""
        return self.TYPE

    def check(self) -> None:
        """Cheap checks before anything is loaded (a serial port that does not exist). Connects nothing."""

    def connect(self, context: ConnectContext) -> RobotHandle:
        raise NotImplementedError
