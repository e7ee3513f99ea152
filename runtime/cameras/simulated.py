"""`--camera simulated`: draws the emulated Push-T plant as a camera over the table would see it.

The emulated device runs its plant in another process, so the camera draws what the robot reports:
each new State's pusher position (joints agent_x, agent_y) and block pose (extras block_x, block_y,
block_angle), with runtime.pusht_render (gym-pusht's geometry and colours, drawn with PIL at
`supersample` times the size, then reduced). The frame's capture time is the State's receive time,
so a link that stops makes the camera stop too: the loop sees stale frames and holds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from runtime.cameras.base import CameraContext, CameraSettings, CameraSpecError
from runtime.cameras.frame import Frame
from runtime.cameras.pacing import Pacer
from runtime.robots.fields import RobotSpecError, check_positive, option

JOINTS = ("agent_x", "agent_y")
EXTRAS = ("block_x", "block_y", "block_angle")


@dataclass
class SimulatedConfig(CameraSettings):
    TYPE: ClassVar[str] = "simulated"
    fps: float = field(default=30.0, metadata=option(
        "frames per second (real time); in lock-step every State is drawn"))
    supersample: int = field(default=4, metadata=option("draw at this many times the size, then reduce (1..8)"))
    state_timeout_s: float = field(default=0.1, metadata=option(
        "wait for a new State in slices this long (no State: no frame, the loop sees frames age)"))

    def __post_init__(self) -> None:
        check_positive(self.fps, "camera.fps", 1000.0)
        check_positive(self.state_timeout_s, "camera.state_timeout_s", 60.0)
        if not 1 <= self.supersample <= 8:
            raise RobotSpecError(f"camera.supersample must be in 1..8, got {self.supersample}")

    def open(self, context: CameraContext) -> "SimulatedCamera":
        return SimulatedCamera(context.robot, context.capabilities, context.shape, 0.0 if context.lockstep
                               else self.fps, self.supersample, self.state_timeout_s)


class SimulatedCamera:
    label = "simulated"
    synthetic = False

    def __init__(self, robot: Any, capabilities: Any, shape: tuple[int, int, int], fps: float = 30.0,
                 supersample: int = 4, state_timeout_s: float = 0.5) -> None:
        if robot is None or capabilities is None:
            raise CameraSpecError("the simulated camera draws the robot's plant: it needs a connected robot")
        joints, extras = list(capabilities.joint_names), list(capabilities.extra_names)
        missing = [n for n in JOINTS if n not in joints] + [n for n in EXTRAS if n not in extras]
        if missing:
            raise CameraSpecError(f"the simulated camera draws the Push-T plant; the robot does not report "
                                  f"{', '.join(missing)} (joints: {', '.join(joints) or 'none'}; extras: "
                                  f"{', '.join(extras) or 'none'})")
        try:
            from PIL import Image  # noqa: F401  (pusht_render draws with PIL)
        except ImportError:
            raise CameraSpecError("the simulated camera draws with Pillow: pip install pillow") from None
        self._robot = robot
        self._ji = [joints.index(n) for n in JOINTS]
        self._ei = [extras.index(n) for n in EXTRAS]
        self.shape = tuple(shape)
        self._pacer = Pacer(fps)
        self._ss = supersample
        self._timeout = state_timeout_s
        self._last: Optional[Any] = None
        self._seq = 0

    def render(self, state: Any) -> np.ndarray:
        from PIL import Image

        from runtime.pusht_render import render_frame

        h, w, _ = self.shape
        pos = np.asarray(state.positions, np.float64)
        ext = np.asarray(state.extras, np.float64)
        big = render_frame(pos[self._ji], ext[self._ei], size=max(h, w) * self._ss)
        img = Image.fromarray(big).resize((w, h), Image.BILINEAR)
        return np.asarray(img, np.uint8)

    def _next_state(self) -> Any:
        """The robot's next State not drawn yet. While none comes the camera gives no frame (the loop
        sees its frames age); a broken link (not a plain timeout) is raised and counted as a read error."""
        from firmware_bridge.robot import LinkTimeout
        while True:
            robot = self._robot
            if robot is None:
                raise EOFError("the simulated camera was closed")
            st = robot.latest_state()
            if st is not None and st is not self._last:
                return st
            try:
                st = robot.wait_state(timeout=self._timeout)
            except LinkTimeout:
                continue
            if st is not self._last:
                return st

    def read(self) -> Frame:
        self._pacer.wait()
        st = self._next_state()
        self._last = st
        t = float(st.rx_time) if st.rx_time == st.rx_time else time.monotonic()
        frame = Frame(self.render(st), t, self._seq)
        self._seq += 1
        return frame

    def close(self) -> None:
        self._robot = None
