"""The emulated device (firmware_bridge.emulator) started in its own process on a pseudo-terminal."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from runtime.robots.fields import RobotSpecError, check_choice, check_positive, option
from runtime.robots.handle import ConnectContext, RobotHandle, RobotSettings
from runtime.robots.serial import connect_serial

MODES = ("realtime", "lockstep")
MAX_STATE_HZ = 10_000.0


@dataclass
class EmulatorConfig(RobotSettings):
    TYPE: ClassVar[str] = "emulator"
    mode: str = field(default="realtime", metadata=option(
        "realtime: the plant runs on its own clock; lockstep: one control step per command", MODES))
    state_hz: Optional[float] = field(default=None, metadata=option(
        "State stream rate (default: at least 50 Hz and at least once per control period)"))
    watchdog_ms: int = field(default=300, metadata=option("the emulated device's command watchdog (ms)"))
    seed: int = field(default=0, metadata=option("seed of the emulated device's own randomness"))
    max_step: Optional[float] = field(default=None, metadata=option(
        "largest target change per command the device accepts (default: the emulator's)"))
    state_timeout_s: float = field(default=0.5, metadata=option(
        "no State for this long means the link is lost (it then reconnects)"))
    takeover: bool = field(default=False, metadata=option(
        "take the device over from another host's session that is still alive"))

    def __post_init__(self) -> None:
        check_choice(self.mode, MODES, "robot.mode")
        if self.state_hz is not None:
            check_positive(self.state_hz, "robot.state_hz", MAX_STATE_HZ)
        if not 0 <= self.watchdog_ms <= 60_000:
            raise RobotSpecError(f"robot.watchdog_ms must be in 0..60000, got {self.watchdog_ms}")
        if self.max_step is not None:
            check_positive(self.max_step, "robot.max_step")
        check_positive(self.state_timeout_s, "robot.state_timeout_s", 60.0)

    def label(self) -> str:
        return "emulator" if self.mode == "realtime" else f"emulator-{self.mode}"

    def connect(self, context: ConnectContext) -> RobotHandle:
        from firmware_bridge.emulator import EmulatorError, start_emulator

        hz = self.state_hz
        if hz is None:
            hz = max(50.0, 1.0 / context.period_s) if context.period_s else 50.0
        try:
            emulator = start_emulator(self.mode, watchdog_ms=self.watchdog_ms, seed=self.seed, state_hz=hz,
                                      max_step=self.max_step, plant="auto", plant_from=context.package)
        except EmulatorError as exc:
            raise RobotSpecError(f"cannot start the emulator: {str(exc).splitlines()[0]}") from None
        return connect_serial(self.label(), emulator.port, 1_000_000, self.state_timeout_s, self.takeover, emulator)
