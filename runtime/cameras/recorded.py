"""`--camera recorded --camera.path FILE`: frames and their timestamps from a file, replayed at the
recorded rate (tests, replays of a real camera).

    FILE.npz   arrays `frames` [N, H, W, 3] uint8 (RGB) and `timestamps` [N] seconds, strictly increasing
    FILE.zarr  a zarr group with the same two arrays (read frame by frame; needs zarr)

Frame i is delivered at open time + (timestamps[i] - timestamps[0]) / speed and carries that time as
its capture time; its sequence number is i. After the last frame the camera stops (the loop then
holds and stops the run) unless `loop` is set. Every malformed file is a one-line CameraSpecError.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from runtime.cameras.base import CameraContext, CameraSettings, CameraSpecError
from runtime.cameras.frame import Frame, fit
from runtime.robots.fields import check_positive, option

MAX_FRAMES = 10_000_000


class EndOfFrames(RuntimeError):
    """The recording has no more frames (the camera stopped)."""


@dataclass
class RecordedConfig(CameraSettings):
    TYPE: ClassVar[str] = "recorded"
    path: str = field(default="", metadata=option("a .npz or .zarr with frames [N,H,W,3] uint8 and timestamps [N] s"))
    loop: bool = field(default=False, metadata=option("start again after the last frame (else the camera stops)"))
    speed: float = field(default=1.0, metadata=option("replay speed (2: twice the recorded frame rate)"))
    resize: bool = field(default=False, metadata=option(
        "centre-crop and resample frames of another size to the policy's (else they are refused)"))

    def __post_init__(self) -> None:
        check_positive(self.speed, "camera.speed", 1000.0)

    def label(self) -> str:
        return f"recorded:{self.path}"

    def open(self, context: CameraContext) -> "RecordedCamera":
        if not self.path:
            raise CameraSpecError("a recorded camera needs --camera.path FILE (.npz or .zarr)")
        frames, stamps = load_recording(Path(self.path))
        return RecordedCamera(frames, stamps, context.shape, self.loop, self.speed, self.resize, self.label())


def load_recording(path: Path) -> tuple[Any, np.ndarray]:
    """(frames array-like [N, H, W, 3] uint8, timestamps float64 [N]); CameraSpecError (one line) otherwise."""
    where = f"--camera.path {path}"
    if not path.exists():
        raise CameraSpecError(f"{where}: no such file")
    try:
        if path.suffix == ".npz":
            if not path.is_file():
                raise CameraSpecError(f"{where}: not a regular file")
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("frames", "timestamps") if k not in z.files]
                if missing:
                    raise CameraSpecError(f"{where}: no array {missing[0]!r} (it has: {', '.join(z.files) or 'none'})")
                stamps = np.asarray(z["timestamps"])
                frames = np.asarray(z["frames"])
        elif path.suffix == ".zarr":
            try:
                import zarr
            except ImportError:
                raise CameraSpecError(f"{where}: reading .zarr needs the zarr package; use a .npz") from None
            group = zarr.open(str(path), mode="r")
            for k in ("frames", "timestamps"):
                if k not in group:
                    raise CameraSpecError(f"{where}: no array {k!r}")
            frames, stamps = group["frames"], np.asarray(group["timestamps"][:])
        else:
            raise CameraSpecError(f"{where}: expected a .npz or .zarr file, got {path.suffix or 'no suffix'!r}")
    except CameraSpecError:
        raise
    except Exception as exc:  # truncated zip, bad header, pickled object arrays...: one line
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise CameraSpecError(f"{where}: cannot read it ({type(exc).__name__}: {text[:160]})") from None
    return check_recording(frames, stamps, where)


def check_recording(frames: Any, stamps: np.ndarray, where: str) -> tuple[Any, np.ndarray]:
    shape = tuple(getattr(frames, "shape", ()))
    dtype = getattr(frames, "dtype", None)
    if len(shape) != 4 or shape[3] != 3 or shape[1] < 1 or shape[2] < 1:
        raise CameraSpecError(f"{where}: frames must be [N, H, W, 3], got {list(shape)}")
    if dtype != np.uint8:
        raise CameraSpecError(f"{where}: frames must be uint8, got {dtype}")
    if stamps.ndim != 1 or stamps.dtype.kind not in "fiu":
        raise CameraSpecError(f"{where}: timestamps must be a 1-D array of numbers, got {list(stamps.shape)} "
                              f"{stamps.dtype}")
    n = shape[0]
    if n != stamps.shape[0]:
        raise CameraSpecError(f"{where}: {n} frames but {stamps.shape[0]} timestamps")
    if not 1 <= n <= MAX_FRAMES:
        raise CameraSpecError(f"{where}: {n} frames (must be 1..{MAX_FRAMES})")
    t = stamps.astype(np.float64)
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.argmax(bad))
        raise CameraSpecError(f"{where}: timestamp {i} is {t[i]!r}")
    back = np.diff(t) <= 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise CameraSpecError(f"{where}: timestamps must increase: timestamp {i} is {t[i]:g} after {t[i - 1]:g}")
    return frames, t


class RecordedCamera:
    synthetic = False

    def __init__(self, frames: Any, stamps: np.ndarray, shape: tuple[int, int, int], loop: bool = False,
                 speed: float = 1.0, resize: bool = False, label: str = "recorded") -> None:
        h, w = frames.shape[1:3]
        if (h, w) != tuple(shape[:2]) and not resize:
            raise CameraSpecError(f"recorded frames are {h}x{w}, the policy sees {shape[0]}x{shape[1]} "
                                  f"(--camera.resize true to centre-crop and resample)")
        self.label = label
        self.shape = tuple(shape)
        self._frames, self._rel = frames, (stamps - stamps[0]) / speed
        self._loop = loop
        self._lap = float(self._rel[-1]) + (float(np.median(np.diff(self._rel))) if len(self._rel) > 1 else 0.1)
        self._i = 0
        self._t0 = time.monotonic()
        self._closed = False

    def read(self) -> Frame:
        n = len(self._rel)
        lap, i = divmod(self._i, n)
        if lap and not self._loop:
            raise EndOfFrames(f"the recording ended after {n} frames")
        due = self._t0 + lap * self._lap + float(self._rel[i])
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pixels = np.asarray(self._frames[i])
        if pixels.shape[:2] != self.shape[:2]:
            pixels = fit(pixels, self.shape)
        self._i += 1
        return Frame(np.ascontiguousarray(pixels), due if math.isfinite(due) else time.monotonic(), self._i - 1)

    def close(self) -> None:
        self._closed = True
