"""`--camera v4l2 --camera.device /dev/video0`: a USB (UVC) or other V4L2 camera through PyAV.

    av.open(device, format="v4l2", options={"video_size": "640x480", "framerate": "30", "input_format": "mjpeg"})

Frames are decoded to RGB (to_ndarray(format="rgb24")), centre-cropped and resampled to the policy's
size. Timestamps: FFmpeg's v4l2 input hands the kernel's buffer time converted to the wall clock
(microseconds); `clock = ffmpeg` puts it back on time.monotonic()'s clock, `clock = arrival` stamps a
frame when it is decoded (later than the capture by the USB and decoding latency). Sequence numbers
advance by the frame intervals the timestamps show, so a dropped frame is counted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Optional

from runtime.cameras.base import CameraContext, CameraSettings, CameraSpecError
from runtime.cameras.frame import Frame, FrameError, fit
from runtime.robots.fields import RobotSpecError, check_choice, check_positive, option

CLOCKS = ("ffmpeg", "arrival")


@dataclass
class V4L2Config(CameraSettings):
    TYPE: ClassVar[str] = "v4l2"
    device: str = field(default="/dev/video0", metadata=option("the V4L2 device"))
    width: int = field(default=640, metadata=option("capture width asked of the camera"))
    height: int = field(default=480, metadata=option("capture height asked of the camera"))
    fps: float = field(default=30.0, metadata=option("capture frame rate asked of the camera"))
    input_format: str = field(default="", metadata=option(
        "the camera's pixel format, e.g. mjpeg or yuyv422 (default: the driver's)"))
    clock: str = field(default="ffmpeg", metadata=option("where frame timestamps come from", CLOCKS))

    def __post_init__(self) -> None:
        check_positive(self.fps, "camera.fps", 1000.0)
        check_choice(self.clock, CLOCKS, "camera.clock")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not 2 <= v <= 8192:
                raise RobotSpecError(f"camera.{name} must be in 2..8192, got {v}")
        if not self.device.startswith("/dev/"):
            raise RobotSpecError(f"camera.device must be a device path under /dev/, got {self.device!r}")

    def label(self) -> str:
        return f"v4l2:{self.device}"

    def options(self) -> dict[str, str]:
        opts = {"video_size": f"{self.width}x{self.height}", "framerate": f"{self.fps:g}"}
        if self.input_format:
            opts["input_format"] = self.input_format
        return opts

    def open(self, context: CameraContext) -> "V4L2Camera":
        return V4L2Camera(context.shape, self)


def _av_open(device: str, options: dict[str, str]) -> Any:
    try:
        import av
    except ImportError:
        raise CameraSpecError("a v4l2 camera needs PyAV: pip install av") from None
    return av.open(device, format="v4l2", options=options)


class V4L2Camera:
    synthetic = False

    def __init__(self, shape: tuple[int, int, int], config: V4L2Config,
                 open_fn: Optional[Callable[[str, dict[str, str]], Any]] = None) -> None:
        self.shape = tuple(shape)
        self.label = config.label()
        self._clock = config.clock
        self._interval = 1.0 / config.fps
        self._seq = -1
        self._last_t: Optional[float] = None
        try:
            self._container = (open_fn or _av_open)(config.device, config.options())
        except CameraSpecError:
            raise
        except Exception as exc:  # av.error.*, OSError: no such device, busy, unsupported size
            opts = ", ".join(f"{k}={v}" for k, v in config.options().items())
            raise CameraSpecError(f"cannot open {config.device} ({opts}): {_one_line(exc)}") from None
        try:
            stream = self._container.streams.video[0]
            self._frames: Iterator[Any] = iter(self._container.decode(stream))
        except Exception as exc:
            self.close()
            raise CameraSpecError(f"{config.device} has no video stream: {_one_line(exc)}") from None

    def _timestamp(self, frame: Any) -> float:
        if self._clock == "arrival":
            return time.monotonic()
        t = getattr(frame, "time", None)
        if t is None or isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise FrameError(f"the v4l2 frame has no usable timestamp ({t!r}); use --camera.clock arrival")
        return float(t) - (time.time() - time.monotonic())  # wall clock -> monotonic

    def read(self) -> Frame:
        try:
            frame = next(self._frames)
        except StopIteration:
            raise EOFError("the v4l2 camera stopped delivering frames") from None
        t = self._timestamp(frame)
        rgb = frame.to_ndarray(format="rgb24")
        if getattr(rgb, "ndim", 0) != 3 or rgb.shape[2] != 3:
            raise FrameError(f"decoded frame has shape {list(getattr(rgb, 'shape', []))}, expected [H, W, 3]")
        if self._last_t is None:
            self._seq = 0
        else:
            self._seq += max(1, round((t - self._last_t) / self._interval))
        self._last_t = t
        return Frame(fit(rgb, self.shape), t, self._seq)

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None:
            self._container = None
            c.close()


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]
