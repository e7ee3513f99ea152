"""`--camera picamera2`: a Raspberry Pi camera through picamera2 (imported only when opened: it does not
exist off a Pi).

The main stream is configured at the policy's frame size (from the package manifest) in libcamera's
"RGB888" format, whose bytes are B, G, R: channels are reversed here. Each frame comes from
capture_request(): its pixels (make_array("main")) and its metadata's SensorTimestamp (nanoseconds,
on CLOCK_MONOTONIC for the Pi's sensors; `clock = boottime` converts a CLOCK_BOOTTIME one); the
request is always released. Sequence numbers advance by the frame intervals the timestamps show, so
a frame the ISP dropped is counted as a drop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from runtime.cameras.base import CameraContext, CameraSettings, CameraSpecError
from runtime.cameras.frame import Frame, FrameError, bgr_to_rgb, fit
from runtime.robots.fields import RobotSpecError, check_choice, check_positive, option

CLOCKS = ("monotonic", "boottime")


@dataclass
class Picamera2Config(CameraSettings):
    TYPE: ClassVar[str] = "picamera2"
    camera_num: int = field(default=0, metadata=option("which camera (picamera2's camera_num)"))
    fps: float = field(default=30.0, metadata=option("sensor frame rate (FrameDurationLimits)"))
    capture_width: Optional[int] = field(default=None, metadata=option(
        "ISP output width (default: the policy's frame width); other sizes are centre-cropped and resampled"))
    capture_height: Optional[int] = field(default=None, metadata=option("ISP output height (default: the policy's)"))
    clock: str = field(default="monotonic", metadata=option("the clock of SensorTimestamp", CLOCKS))

    def __post_init__(self) -> None:
        check_positive(self.fps, "camera.fps", 1000.0)
        check_choice(self.clock, CLOCKS, "camera.clock")
        if not 0 <= self.camera_num <= 16:
            raise RobotSpecError(f"camera.camera_num must be in 0..16, got {self.camera_num}")
        for name in ("capture_width", "capture_height"):
            v = getattr(self, name)
            if v is not None and not 2 <= v <= 8192:
                raise RobotSpecError(f"camera.{name} must be in 2..8192, got {v}")

    def open(self, context: CameraContext) -> "Picamera2Camera":
        return Picamera2Camera(context.shape, self)


def clock_offset(clock: str) -> float:
    """Seconds to subtract from a `clock` timestamp to put it on time.monotonic()'s clock."""
    if clock == "monotonic":
        return 0.0
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()


class Picamera2Camera:
    synthetic = False

    def __init__(self, shape: tuple[int, int, int], config: Picamera2Config) -> None:
        try:
            from picamera2 import Picamera2  # only on a Raspberry Pi
        except ImportError as exc:
            raise CameraSpecError(f"picamera2 is not available ({exc}): on a Raspberry Pi install the 'camera' "
                                  f"extra (apt install python3-picamera2)") from None
        self.shape = tuple(shape)
        self.label = f"picamera2:{config.camera_num}"
        h, w = self.shape[:2]
        size = (config.capture_width or w, config.capture_height or h)
        self._interval = 1.0 / config.fps
        self._offset = clock_offset(config.clock)
        self._seq = -1
        self._last_ns: Optional[int] = None
        try:
            self._cam = Picamera2(config.camera_num)
        except Exception as exc:
            raise CameraSpecError(f"cannot open picamera2 camera {config.camera_num}: {_one_line(exc)}") from None
        try:
            us = int(round(1e6 / config.fps))
            cfg = self._cam.create_video_configuration(main={"size": size, "format": "RGB888"},
                                                       controls={"FrameDurationLimits": (us, us)})
            self._cam.configure(cfg)
            self._cam.start()
        except Exception as exc:
            self._cam.close()
            raise CameraSpecError(f"cannot start picamera2 camera {config.camera_num} at {size[0]}x{size[1]} "
                                  f"RGB888: {_one_line(exc)}") from None

    def read(self) -> Frame:
        request = self._cam.capture_request()
        try:
            array = request.make_array("main")
            metadata = request.get_metadata()
        finally:
            request.release()  # a request not returned starves libcamera of buffers
        ts = metadata.get("SensorTimestamp") if isinstance(metadata, dict) else None
        if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
            raise FrameError(f"picamera2 request metadata has SensorTimestamp {ts!r}, not a positive integer (ns)")
        if self._last_ns is None:
            self._seq = 0
        else:  # intervals since the last frame; a skipped interval is a dropped frame
            steps = round((ts - self._last_ns) / 1e9 / self._interval)
            self._seq += max(1, steps)
        self._last_ns = ts
        pixels = bgr_to_rgb(array)
        if pixels.shape != self.shape:
            pixels = fit(pixels, self.shape)
        return Frame(pixels, ts / 1e9 - self._offset, self._seq)

    def close(self) -> None:
        try:
            self._cam.stop()
        finally:
            self._cam.close()


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]
