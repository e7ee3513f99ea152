"""FrameStream: reads a camera in a background thread so a tick never waits on it, keeps the recent
frames, and answers "the frame nearest to (and not after) time t".

Every frame is checked as it arrives (runtime.cameras.frame.frame_problem, plus sequence numbers and
timestamps that must increase); a bad frame is counted by reason and never kept, so it can never reach
the policy. A gap in sequence numbers is counted as dropped frames. A camera that raises is counted
(errors) and read again; one that reports its end (EndOfFrames / EOFError) stops the stream.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Optional

import numpy as np

from runtime.cameras.base import CameraSpecError
from runtime.cameras.frame import Frame, frame_problem

STOP_EXCEPTIONS: tuple[type[BaseException], ...] = (EOFError,)


class CameraTimeout(CameraSpecError, RuntimeError):
    """The camera gave no usable frame at start (one line)."""


class FrameStream:
    """The loop's view of a camera. `shape` is [H, W, 3]; `keep` frames are kept for pairing."""

    def __init__(self, camera: Any, shape: Optional[tuple[int, int, int]] = None, first_frame_timeout_s: float = 2.0,
                 keep: int = 32) -> None:
        from runtime.cameras.recorded import EndOfFrames

        self._stop_types = STOP_EXCEPTIONS + (EndOfFrames,)
        self.camera = camera
        self.shape = tuple(shape if shape is not None else camera.shape)
        self.label = str(getattr(camera, "label", type(camera).__name__))
        self.synthetic = bool(getattr(camera, "synthetic", False))
        self.frames = 0
        self.errors = 0
        self.drops = 0
        self.bad: dict[str, int] = {}
        self.last_error = ""
        self.stopped = ""
        self._untimed_seq = 0
        self._first: Optional[Frame] = None
        self._buf: deque[Frame] = deque(maxlen=max(2, keep))
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()
        with self._cond:
            deadline = time.monotonic() + first_frame_timeout_s
            while not self._buf and not self.stopped and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            ok = bool(self._buf)
        if not ok:
            why = self.stopped or self.last_error or "nothing arrived"
            self.close()
            raise CameraTimeout(f"the camera ({self.label}) gave no usable frame within {first_frame_timeout_s:g} s "
                                f"({why})")

    # ------------------------------------------------------------------ reader thread
    def _bad(self, key: str, text: str) -> None:
        self.bad[key] = self.bad.get(key, 0) + 1
        self.last_error = text
        self._stop.wait(0.005)  # a source that repeats a bad frame at once must not spin a core

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = self.camera.read()
            except self._stop_types as exc:
                with self._cond:
                    self.stopped = _one_line(exc)
                    self._cond.notify_all()
                return
            except Exception as exc:  # a camera hiccup must not kill the thread: counted, shown in the summary
                self.errors += 1
                self.last_error = _one_line(exc)
                self._stop.wait(0.05)
                continue
            if isinstance(got, np.ndarray):  # a legacy camera (pixels only): stamped on arrival
                got = Frame(got, time.monotonic(), self._untimed_seq)
                self._untimed_seq += 1
            problem = frame_problem(got, self.shape)
            if problem is not None:
                self._bad("malformed", problem)
                continue
            with self._cond:
                prev = self._buf[-1] if self._buf else None
                if prev is not None and got.seq <= prev.seq:
                    self._bad("repeated" if got.seq == prev.seq else "sequence went back",
                              f"camera frame sequence number {got.seq} after {prev.seq}")
                    continue
                if prev is not None and got.t_capture <= prev.t_capture:
                    self._bad("time went back", f"camera frame {got.seq} timestamp {got.t_capture:.6f} s is not "
                                                f"after frame {prev.seq}'s {prev.t_capture:.6f} s")
                    continue
                if prev is not None:
                    self.drops += got.seq - prev.seq - 1
                if self._first is None:
                    self._first = got
                self._buf.append(got)
                self.frames += 1
                self._cond.notify_all()

    # ------------------------------------------------------------------ the loop's side
    def latest_frame(self) -> Optional[Frame]:
        with self._cond:
            return self._buf[-1] if self._buf else None

    def frame_at(self, t: float, wait_s: float = 0.0) -> Optional[Frame]:
        """The newest frame captured at or before `t` (None when there is none). With wait_s > 0, first
        wait up to that long for a frame captured at or after `t` (lock-step: the frame of this State)."""
        with self._cond:
            if wait_s > 0:
                deadline = time.monotonic() + wait_s
                while (not self.stopped and not (self._buf and self._buf[-1].t_capture >= t)
                       and time.monotonic() < deadline):
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
            for f in reversed(self._buf):
                if f.t_capture <= t:
                    return f
            return None

    def latest(self) -> np.ndarray:
        """The newest frame's pixels (the FrameSource protocol of runtime.sensors)."""
        f = self.latest_frame()
        return None if f is None else f.pixels  # type: ignore[return-value]

    def age(self) -> float:
        f = self.latest_frame()
        return float("inf") if f is None else time.monotonic() - f.t_capture

    def fps(self) -> float:
        with self._cond:
            first, last, n = self._first, self._buf[-1] if self._buf else None, self.frames
        if first is None or last is None or n < 2 or last.t_capture <= first.t_capture:
            return float("nan")
        return (n - 1) / (last.t_capture - first.t_capture)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.label, "synthetic": self.synthetic, "frames": self.frames, "fps": self.fps(),
                "drops": self.drops, "bad_frames": dict(self.bad), "errors": self.errors,
                "last_error": self.last_error, "stopped": self.stopped}

    def close(self) -> None:
        self._stop.set()
        mine = self._thread is threading.current_thread()
        if self._thread.is_alive() and not mine:
            self._thread.join(timeout=0.2)  # a read in flight normally ends within a frame interval
        try:
            self.camera.close()  # ...and a source blocked waiting for frames ends when closed
        except Exception as exc:
            self.last_error = f"close failed: {_one_line(exc)}"
        if self._thread.is_alive() and not mine:
            self._thread.join(timeout=1.0)


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]


def paired_frame(stream: Any, t_state: float, wait_s: float, epoch: float) -> Optional[Frame]:
    """The frame captured nearest to (not after) ``t_state``, never one from before ``epoch`` (a plant
    reset: another episode's scene). For the reset State itself (t_state <= epoch), the first frame since
    the reset: no command has moved the plant yet. One rule for imle-run's loop and imle-record."""
    frame = stream.frame_at(t_state, wait_s)
    if frame is not None and frame.t_capture >= epoch:
        return frame
    if t_state <= epoch:
        latest = stream.latest_frame()
        if latest is not None and latest.t_capture >= epoch:
            return latest
    return None
