"""A Franka arm through firmware_bridge.franka (pylibfranka, imported only when it connects)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from runtime.robots.fields import RobotSpecError, check_choice, check_positive, option
from runtime.robots.handle import ConnectContext, RobotHandle, RobotSettings

ARMS = ("fr3", "fer")
REALTIME = ("enforce", "ignore")
LATE_COMMANDS = ("auto", "dropped", "applied")


@dataclass
class FrankaConfig(RobotSettings):
    TYPE: ClassVar[str] = "franka"
    host: str = field(metadata=option("the arm's FCI address (franka-sim: a loopback address)"))
    arm: Optional[str] = field(default=None, metadata=option(
        "fr3 or fer (Panda); default: $IMLE_FRANKA_ARM, else fr3", ARMS))
    realtime: Optional[str] = field(default=None, metadata=option(
        "enforce (PREEMPT_RT kernel, the real arm) or ignore (franka-sim, a desktop kernel); "
        "default: $IMLE_FRANKA_REALTIME, else enforce", REALTIME))
    late_commands: Optional[str] = field(default=None, metadata=option(
        "what the peer does with a command that misses its 1 kHz cycle: dropped (the FCI), applied "
        "(franka-sim) or auto (applied on a loopback host); default: $IMLE_FRANKA_LATE_COMMANDS, else auto",
        LATE_COMMANDS))
    connect_timeout_s: float = field(default=20.0, metadata=option("give up connecting after this long"))
    state_timeout_s: float = field(default=0.1, metadata=option("no State for this long means the link is lost"))

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise RobotSpecError("robot.host must name the arm's address, got ''")
        for name, choices in (("arm", ARMS), ("realtime", REALTIME), ("late_commands", LATE_COMMANDS)):
            value = getattr(self, name)
            if value is not None:
                check_choice(value, choices, f"robot.{name}")
        check_positive(self.connect_timeout_s, "robot.connect_timeout_s", 600.0)
        check_positive(self.state_timeout_s, "robot.state_timeout_s", 60.0)

    def label(self) -> str:
        return f"franka:{self.host}"

    def connect(self, context: ConnectContext) -> RobotHandle:
        # TODO(#17 franka split): the environment variables stay as FrankaRobot's defaults for fields left
        # unset here; every field given is passed to its constructor and the variables are not read.
        from firmware_bridge.franka import FrankaRobot

        try:
            robot = FrankaRobot(self.host, arm=self.arm,
                                realtime=None if self.realtime is None else self.realtime == "enforce",
                                late_commands=self.late_commands, connect_timeout_s=self.connect_timeout_s,
                                state_timeout_s=self.state_timeout_s)
        except ValueError as exc:  # a bad IMLE_FRANKA_* variable for a field left unset: the user's to fix
            raise RobotSpecError(f"--robot {self.label()}: {exc}") from None
        try:
            caps = robot.connect()  # FrankaImportError / HandshakeError (LinkErrors, one line) when it cannot
        except Exception:
            robot.close()
            raise
        return RobotHandle(self.label(), robot, caps, None, {"host": self.host})
