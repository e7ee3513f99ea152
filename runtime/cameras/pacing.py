"""Pace a source's reads to its frame rate on absolute deadlines (no drift), like a real sensor."""
from __future__ import annotations

import time


class Pacer:
    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self._next = time.monotonic()

    def wait(self) -> float:
        """Sleep until the next frame is due; returns the monotonic time it is 'captured'."""
        if self.interval <= 0:
            return time.monotonic()
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
        # a reader that fell behind starts again from now instead of bursting old frames
        self._next = max(now, self._next) + self.interval
        return time.monotonic()
