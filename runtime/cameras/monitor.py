"""FrameMonitor: every tick, is the frame the loop is about to use fresh enough to plan from?

A frame older than `max_age_s` (at the tick, or at the State's time in lock-step), one dated in the
future (a clock mismatch), no frame at all, or the same frame (sequence number) used for more than
`max_repeat` ticks in a row makes the tick hold the robot; the hold is counted by reason. After
`max_stale` such ticks in a row the run stops (exit 4). Ages of the frames checked are kept for the
summary (p50/p99).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from runtime.cameras.frame import Frame, frame_problem

DEFAULT_MAX_REPEAT = 3
DEFAULT_MAX_STALE = 5
MIN_MAX_AGE_S = 0.1


def default_max_age(period_s: float) -> float:
    """Two control periods, at least 0.1 s: a frame older than that shows the scene as it was more than
    two commands ago; the floor leaves a USB camera's capture-to-host latency room at fast rates."""
    return max(2.0 * period_s, MIN_MAX_AGE_S)


@dataclass
class FrameMonitor:
    max_age_s: float
    max_repeat: int = DEFAULT_MAX_REPEAT
    max_stale: int = DEFAULT_MAX_STALE
    future_tolerance_s: float = 0.05
    shape: Optional[tuple[int, int, int]] = None  # [H, W, 3]: frames of another shape or dtype are refused
    holds: int = 0
    in_row: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    ages_s: list[float] = field(default_factory=list)
    _last_seq: Optional[int] = None
    _repeat: int = 0

    def problem_of(self, frame: Any) -> Optional[str]:
        """What is wrong with the frame itself (shape, dtype, timestamp), or None."""
        return frame_problem(frame, self.shape) if self.shape is not None else None

    def problem(self, frame: Optional[Frame], now: float) -> Optional[tuple[str, str]]:
        if frame is None:
            self._last_seq, self._repeat = None, 0
            return "missing", "no camera frame at or before the State's time"
        bad = self.problem_of(frame)
        if bad is not None:
            return "malformed", bad
        age = now - frame.t_capture
        self.ages_s.append(age)
        self._repeat = self._repeat + 1 if frame.seq == self._last_seq else 1
        self._last_seq = frame.seq
        if age < -self.future_tolerance_s:
            return "future", (f"camera frame {frame.seq} is dated {-age * 1e3:.0f} ms in the future (its clock is "
                              f"not time.monotonic()'s?)")
        if age > self.max_age_s:
            return "stale", f"camera frame {frame.seq} is {age * 1e3:.0f} ms old (limit {self.max_age_s * 1e3:.0f} ms)"
        if self._repeat > self.max_repeat:
            return "repeated", (f"camera frame {frame.seq} used for {self._repeat} ticks in a row "
                                f"(limit {self.max_repeat})")
        return None

    def check(self, frame: Optional[Frame], now: float) -> bool:
        """True: use the frame (resets the in-a-row count). False: hold this tick (counted)."""
        p = self.problem(frame, now)
        if p is None:
            self.in_row = 0
            return True
        key, text = p
        self.holds += 1
        self.in_row += 1
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        self.last_error = text
        return False

    @property
    def exhausted(self) -> bool:
        return self.in_row >= self.max_stale

    def stop_reason(self) -> str:
        return (f"camera: {self.in_row} ticks in a row without a usable frame (limit {self.max_stale}); "
                f"last: {self.last_error}")

    def as_dict(self) -> dict[str, Any]:
        return {"max_age_ms": self.max_age_s * 1e3, "max_repeat": self.max_repeat, "max_stale": self.max_stale,
                "stale_holds": self.holds, "holds_by_reason": dict(self.by_reason), "last_hold": self.last_error}
