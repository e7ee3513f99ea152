"""The loop reads frames with capture times (FrameStream). A FrameSource that only has latest() (pixels,
no timestamps: code written before runtime.cameras) is adapted here: each frame it gives is stamped
when it is read, and its sequence number counts reads whose pixels changed."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from runtime.cameras.frame import Frame


class UntimedSource:
    def __init__(self, source: Any) -> None:
        self.source = source
        self.label = str(getattr(source, "label", f"{type(source).__name__} (no timestamps)"))
        self.synthetic = bool(getattr(source, "synthetic", False))
        self.frames = 0
        self._last: Optional[Frame] = None

    def frame_at(self, t: float, wait_s: float = 0.0) -> Optional[Frame]:
        px = self.source.latest()
        if px is None:
            return None
        last = self._last
        if last is not None and (px is last.pixels or (isinstance(px, np.ndarray) and
                                                       isinstance(last.pixels, np.ndarray)
                                                       and px.shape == last.pixels.shape
                                                       and np.array_equal(px, last.pixels))):
            return last  # the same picture: the same frame, ageing
        self.frames += 1
        self._last = Frame(px, min(t, time.monotonic()), self.frames - 1)
        return self._last

    def latest_frame(self) -> Optional[Frame]:
        return self.frame_at(time.monotonic())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.label, "synthetic": self.synthetic, "frames": self.frames, "fps": float("nan"),
                "drops": 0, "bad_frames": {}, "errors": 0, "last_error": "", "stopped": "",
                "note": "timestamps taken when frames were read (the source has none)"}


def as_timed_source(camera: Any) -> Any:
    """A FrameStream-like object (frame_at, latest_frame, as_dict) for the loop."""
    if all(hasattr(camera, n) for n in ("frame_at", "latest_frame", "as_dict")):
        return camera
    return UntimedSource(camera)
