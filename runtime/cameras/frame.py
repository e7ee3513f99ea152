"""What every camera source delivers: a :class:`Frame` (RGB uint8 pixels, capture time, sequence number),
and the checks a frame passes before the loop may use it (one-line reasons, never a traceback)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame. `t_capture` is on time.monotonic()'s clock (seconds): when the scene was
    captured, as the source knows it (sensor timestamp, kernel buffer time, the State it was drawn
    from); `seq` counts frames of the source, a gap means the source dropped frames."""
    pixels: np.ndarray   # [H, W, 3] RGB uint8
    t_capture: float
    seq: int


class FrameError(ValueError):
    """A frame the loop must not use (one-line message)."""


def frame_problem(frame: Any, shape: tuple[int, int, int]) -> Optional[str]:
    """Why `frame` cannot be used for a policy seeing `shape` ([H, W, 3]), or None when it can."""
    if not isinstance(frame, Frame):
        return f"the camera gave a {type(frame).__name__}, not a Frame"
    px = frame.pixels
    if not isinstance(px, np.ndarray):
        return f"frame pixels are a {type(px).__name__}, not an array"
    if px.dtype != np.uint8:
        return f"frame pixels are {px.dtype}, expected uint8"
    if tuple(px.shape) != tuple(shape):
        return f"frame shape is {list(px.shape)}, the policy sees {list(shape)}"
    t = frame.t_capture
    if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not math.isfinite(float(t)):
        return f"frame timestamp is {t!r}, not a finite number"
    if isinstance(frame.seq, bool) or not isinstance(frame.seq, (int, np.integer)):
        return f"frame sequence number is {frame.seq!r}, not an integer"
    return None


def resize_nearest(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then nearest-neighbour resample (numpy only)."""
    h, w = frame.shape[:2]
    th, tw = shape
    if (h, w) == (th, tw):
        return frame
    if h * tw > w * th:  # too tall
        ch = w * th // tw
        top = (h - ch) // 2
        frame, h = frame[top:top + ch], ch
    elif h * tw < w * th:  # too wide
        cw = h * tw // th
        left = (w - cw) // 2
        frame, w = frame[:, left:left + cw], cw
    rows = (np.arange(th) * h // th).astype(np.intp)
    cols = (np.arange(tw) * w // tw).astype(np.intp)
    return frame[rows][:, cols]


def bgr_to_rgb(array: np.ndarray) -> np.ndarray:
    """[H, W, 3 or 4] B, G, R(, X) bytes -> [H, W, 3] R, G, B (libcamera's RGB888 / XRGB8888 layout)."""
    a = np.asarray(array)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
        raise FrameError(f"the camera gave an array of {list(a.shape)} {a.dtype}; expected [H, W, 3|4] uint8")
    return np.ascontiguousarray(a[..., 2::-1])


def fit(pixels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A source's RGB image brought to the policy's [H, W, 3] (centre crop + nearest resample)."""
    return np.ascontiguousarray(resize_nearest(pixels, shape[:2]))
