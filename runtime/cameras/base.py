"""The camera contract: a source's configuration (a dataclass in the registry) opens a Camera."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Protocol

from runtime.cameras.frame import Frame


class CameraSpecError(ValueError):
    """A camera configuration that cannot name a camera, or a camera that cannot open (one line)."""


@dataclass
class CameraContext:
    """What a source needs from the run: the policy's frame shape, the control period, whether the
    loop runs in lock-step, and (for the simulated camera) the connected robot."""
    shape: tuple[int, int, int]           # [H, W, 3] the policy sees (from the package manifest)
    period_s: Optional[float] = None
    lockstep: bool = False
    robot: Any = None                     # firmware_bridge.robot.Robot (simulated camera only)
    capabilities: Any = None              # its Capabilities (names of joints and extras)


class Camera(Protocol):
    """An open camera. read() blocks until the next frame; close() releases the device."""
    label: str
    synthetic: bool

    def read(self) -> Frame: ...

    def close(self) -> None: ...


@dataclass
class CameraSettings:
    """Base of every camera configuration. Fields carry metadata=option(help) (runtime.robots.fields)."""
    TYPE: ClassVar[str] = ""
    SYNTHETIC: ClassVar[bool] = False   # the frames are not a picture of the scene

    def open(self, context: CameraContext) -> Camera:  # pragma: no cover - every source overrides it
        raise NotImplementedError

    def label(self) -> str:
        return self.TYPE
