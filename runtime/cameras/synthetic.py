"""`--camera synthetic`: a moving gradient, not a picture of anything. Only by explicit choice (tests,
timing runs on a machine without a camera); the summary says SYNTHETIC when it is used."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from runtime.cameras.base import CameraContext, CameraSettings
from runtime.cameras.frame import Frame
from runtime.cameras.pacing import Pacer
from runtime.robots.fields import check_positive, option


@dataclass
class SyntheticConfig(CameraSettings):
    TYPE: ClassVar[str] = "synthetic"
    SYNTHETIC: ClassVar[bool] = True
    fps: float = field(default=30.0, metadata=option("frames per second the gradient is produced at"))

    def __post_init__(self) -> None:
        check_positive(self.fps, "camera.fps", 1000.0)

    def open(self, context: CameraContext) -> "SyntheticCamera":
        return SyntheticCamera(context.shape, self.fps)


class SyntheticCamera:
    label = "synthetic"
    synthetic = True

    def __init__(self, shape: tuple[int, int, int], fps: float = 30.0) -> None:
        self.shape = tuple(shape)
        self._pacer = Pacer(fps)
        self._seq = 0
        h, w, _ = self.shape
        self._yy, self._xx = np.mgrid[0:h, 0:w]

    def pixels(self, i: int) -> np.ndarray:
        return gradient_frame(self.shape, self._yy, self._xx, i)

    def read(self) -> Frame:
        t = self._pacer.wait()
        i = self._seq
        self._seq += 1
        return Frame(self.pixels(i), t, i)

    def close(self) -> None:
        pass


def gradient_frame(shape: tuple[int, ...], yy: np.ndarray, xx: np.ndarray, i: int) -> np.ndarray:
    """Frame ``i`` of the deterministic moving gradient (``yy, xx = np.mgrid[0:H, 0:W]``): fake pixels that
    change every frame, for tests and timing only."""
    frame = np.empty(shape, np.uint8)
    frame[..., 0] = (xx * 2 + i) % 256
    frame[..., 1] = (yy * 2 + 3 * i) % 256
    frame[..., 2] = (i * 5) % 256
    return frame
