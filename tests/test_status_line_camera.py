"""imle-run's live status line shows the camera's holds when a camera is used (#21), and nothing about a
camera when none is."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from runtime.cameras import Frame, FrameMonitor
from runtime.cli import StatusLine
from runtime.loop import LiveStatus


def _line(monitor):
    loop = SimpleNamespace(status=LiveStatus(episode=0, step=7, progress=0.25, jitter_ms=0.1, plan_ms=12.0),
                           frame_monitor=monitor)
    return StatusLine(loop, episodes=2, max_steps=100)._line()


def test_status_line_counts_camera_holds_and_says_while_holding():
    mon = FrameMonitor(max_age_s=0.1, max_repeat=3, max_stale=5)
    now = time.monotonic()
    fresh = Frame(np.zeros((4, 4, 3), np.uint8), now, 1)
    assert mon.check(fresh, now)
    assert _line(mon).endswith(" link ok camera holds 0")
    stale = Frame(np.zeros((4, 4, 3), np.uint8), now - 1.0, 2)
    assert not mon.check(stale, now) and not mon.check(None, now)
    assert _line(mon).endswith(" camera holds 2 (HOLDING: 2 in a row, stop at 5)")
    assert mon.check(Frame(np.zeros((4, 4, 3), np.uint8), now + 0.01, 3), now + 0.01)  # fresh again
    assert _line(mon).endswith(" camera holds 2")


def test_status_line_without_a_camera_says_nothing_about_one():
    line = _line(None)
    assert "camera" not in line and line.endswith("link ok")
    loop = SimpleNamespace(status=LiveStatus())  # a loop object without the attribute at all
    assert "camera" not in StatusLine(loop, episodes=1, max_steps=10)._line()
