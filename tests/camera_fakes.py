"""Stand-ins for camera tests: a scripted camera, a picamera2 module with picamera2's API, and a PyAV
container with the parts V4L2Camera uses (imported by tests/test_cameras*.py)."""
from __future__ import annotations

import sys
import threading
import time
import types
from typing import Any, Optional

import numpy as np

from runtime.cameras.frame import Frame
from runtime.cameras.recorded import EndOfFrames

SHAPE = (96, 96, 3)


def pixels(i: int, shape=SHAPE) -> np.ndarray:
    return np.full(shape, i % 256, np.uint8)


class ScriptedCamera:
    """read() returns the scripted items one by one (an Exception instance is raised), then either ends
    (EndOfFrames) or, with `then_freeze`, blocks until closed like a camera that stopped delivering."""
    label = "scripted"
    synthetic = False

    def __init__(self, items: list, then_freeze: bool = False, gap_s: float = 0.0) -> None:
        self.items = list(items)
        self.then_freeze = then_freeze
        self.gap_s = gap_s
        self.closed = threading.Event()
        self.served = 0

    def read(self) -> Any:
        if self.gap_s:
            time.sleep(self.gap_s)
        if not self.items:
            if self.then_freeze:
                self.closed.wait(30.0)
            raise EndOfFrames("script ended")
        item = self.items.pop(0)
        self.served += 1
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item()
        return item

    def close(self) -> None:
        self.closed.set()


class LiveCamera:
    """Frames stamped now with increasing sequence numbers; freezes (stops delivering) after `freeze_after`
    frames, or keeps handing the same frame (same sequence number) with `repeat_after`."""
    label = "live-fake"
    synthetic = False

    def __init__(self, fps: float = 200.0, freeze_after: Optional[int] = None, repeat_after: Optional[int] = None,
                 backwards_after: Optional[int] = None, pause_at: Optional[int] = None, pause_s: float = 0.0,
                 shape=SHAPE) -> None:
        self.interval = 1.0 / fps
        self.pause_at, self.pause_s, self.shape = pause_at, pause_s, shape
        self.freeze_after, self.repeat_after, self.backwards_after = freeze_after, repeat_after, backwards_after
        self.n = 0
        self.closed = threading.Event()
        self.last: Optional[Frame] = None

    def read(self) -> Frame:
        if self.closed.wait(self.interval):
            raise EOFError("closed")
        if self.pause_at is not None and self.n == self.pause_at and self.pause_s:
            self.pause_s, _ = 0.0, self.closed.wait(self.pause_s)  # one hiccup, then frames again
        if self.freeze_after is not None and self.n >= self.freeze_after:
            self.closed.wait(30.0)
            raise EOFError("closed")
        if self.repeat_after is not None and self.n >= self.repeat_after and self.last is not None:
            return Frame(self.last.pixels, time.monotonic(), self.last.seq)  # same sequence number, new time
        t = time.monotonic()
        if self.backwards_after is not None and self.n >= self.backwards_after:
            t -= 10.0
        f = Frame(pixels(self.n, self.shape), t, self.n)
        self.n += 1
        self.last = f
        return f

    def close(self) -> None:
        self.closed.set()


# ----------------------------------------------------------------------------- picamera2 stand-in
class FakeRequest:
    def __init__(self, cam: "FakePicamera2", array: Optional[np.ndarray], metadata: dict) -> None:
        self.cam, self.array, self.metadata = cam, array, metadata

    def make_array(self, name: str) -> np.ndarray:
        assert name == "main"
        if self.array is None:
            raise RuntimeError("buffer lost")
        return self.array

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def release(self) -> None:
        self.cam.released += 1


class FakePicamera2:
    """picamera2.Picamera2's capture API. `script` is a list of (bgr_array, metadata) the requests hand out."""
    instances: list["FakePicamera2"] = []
    script: list = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.configured: Optional[dict] = None
        self.started = self.stopped = self.closed = False
        self.released = 0
        self.requests = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, controls: Optional[dict] = None, **kw: Any) -> dict:
        return {"main": dict(main), "controls": dict(controls or {})}

    def configure(self, config: dict) -> None:
        self.configured = config

    def start(self) -> None:
        assert self.configured is not None, "start() before configure()"
        self.started = True

    def capture_request(self) -> FakeRequest:
        assert self.started
        if not FakePicamera2.script:
            time.sleep(0.01)
            raise RuntimeError("no more frames in the script")
        self.requests += 1
        array, md = FakePicamera2.script.pop(0)
        return FakeRequest(self, array, md)

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


def install_fake_picamera2(monkeypatch: Any, script: list) -> type:
    mod = types.ModuleType("picamera2")
    FakePicamera2.instances = []
    FakePicamera2.script = list(script)
    mod.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    return FakePicamera2


# ----------------------------------------------------------------------------- PyAV stand-in
class FakeVideoFrame:
    def __init__(self, rgb: np.ndarray, t: Any) -> None:
        self.rgb, self.time = rgb, t

    def to_ndarray(self, format: str = "") -> np.ndarray:
        assert format == "rgb24"
        return self.rgb


class FakeContainer:
    def __init__(self, frames: list) -> None:
        self.frames = frames
        self.streams = types.SimpleNamespace(video=["video-stream-0"])
        self.closed = False

    def decode(self, stream: Any):
        assert stream == "video-stream-0"
        yield from self.frames

    def close(self) -> None:
        self.closed = True
