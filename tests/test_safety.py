"""runtime.safety: limits, rate limits, NaN guard, e-stop, link watch."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.safety import LinkWatch, SafetyConfigError, SafetyFilter, SafetyLimits, parse_action_limits


def make_filter(max_velocity=(0.0, 0.0), period=0.1) -> SafetyFilter:
    limits = SafetyLimits.build({"low": [10.0, 20.0], "high": [500.0, 490.0]}, 2, [0.0, 0.0], [512.0, 480.0],
                                max_velocity, period)
    return SafetyFilter(limits)


def test_parse_action_limits_forms():
    lo, hi = parse_action_limits({"low": [1, 2], "high": [3, 4]}, 2)
    assert lo.tolist() == [1, 2] and hi.tolist() == [3, 4]
    lo, hi = parse_action_limits([[0, 1], [2, 3]], 2)
    assert lo.tolist() == [0, 2] and hi.tolist() == [1, 3]
    lo, hi = parse_action_limits(None, 3)
    assert np.all(np.isinf(lo)) and np.all(np.isinf(hi))
    lo, hi = parse_action_limits({"low": None, "high": [1, 1]}, 2)
    assert np.all(lo == -np.inf)
    with pytest.raises(SafetyConfigError):
        parse_action_limits([[0, 1]], 2)


def test_limits_intersect_manifest_and_device():
    f = make_filter()
    assert f.limits.lower.tolist() == [10.0, 20.0]
    assert f.limits.upper.tolist() == [500.0, 480.0]  # the device's 480 is tighter than the package's 490
    assert np.all(np.isinf(f.limits.max_step))        # max velocity 0 = not limited (protocol convention)


def test_velocity_becomes_per_tick_step_and_disjoint_ranges_are_refused():
    lim = SafetyLimits.build(None, 2, None, None, [100.0, 0.0], period_s=0.01, max_velocity=[50.0, 20.0])
    assert lim.max_step.tolist() == pytest.approx([0.5, 0.2])  # min(device, extra cap) * period
    with pytest.raises(SafetyConfigError, match="do not overlap"):
        SafetyLimits.build({"low": [600.0], "high": [700.0]}, 1, [0.0], [512.0])
    with pytest.raises(SafetyConfigError, match="3 values"):
        SafetyLimits.build(None, 2, [0, 0, 0], [1, 1, 1])


def test_in_range_command_passes_bit_identical():
    f = make_filter()
    req = np.array([123.456789, 234.5678901], np.float32)
    res = f.filter(req, np.array([100.0, 100.0]))
    assert not res.held and res.command.dtype == np.float32
    assert res.command.tobytes() == req.tobytes()
    assert f.counts.clipped == 0 and f.counts.rate_limited == 0


def test_clip_to_position_limits():
    f = make_filter()
    res = f.filter(np.array([-5.0, 999.0], np.float32), np.array([100.0, 100.0]))
    assert res.command.tolist() == [10.0, 480.0]
    assert f.counts.clipped == 1


def test_rate_limit_relative_to_last_command_and_current_position_after_reset():
    f = make_filter(max_velocity=(100.0, 100.0), period=0.1)  # 10 units per tick
    res = f.filter(np.array([200.0, 200.0]), np.array([100.0, 100.0]))
    assert res.command.tolist() == [110.0, 110.0]  # first command: relative to where the robot is
    res = f.filter(np.array([200.0, 105.0]), np.array([100.0, 100.0]))
    assert res.command.tolist() == [120.0, 105.0]  # then relative to the last command
    assert f.counts.rate_limited == 2
    f.reset()
    res = f.filter(np.array([50.0, 100.0]), np.array([100.0, 100.0]))
    assert res.command.tolist() == [90.0, 100.0]


def test_nan_guard_holds_last_command_or_current_position():
    f = make_filter()
    res = f.filter(np.array([np.nan, 1.0]), np.array([100.0, 200.0]))
    assert res.held and res.reason == "nan"
    assert res.command.tolist() == [100.0, 200.0]  # no command yet: hold where the robot is
    f.filter(np.array([300.0, 300.0]), np.array([100.0, 200.0]))
    res = f.filter(np.array([1.0, np.inf]), np.array([100.0, 200.0]))
    assert res.command.tolist() == [300.0, 300.0]
    assert f.counts.nan_blocked == 2
    f.reset()
    res = f.filter(np.array([np.nan, np.nan]), np.array([np.nan, 5.0]))  # nothing safe is known: send nothing
    assert res.command is None and res.held
    res = f.filter(np.array([1.0, 2.0, 3.0]), np.array([100.0, 200.0]))  # wrong size counts as invalid
    assert res.held


def test_hold_when_no_action():
    f = make_filter()
    res = f.filter(None, np.array([600.0, 300.0]))
    assert res.held and res.command.tolist() == [500.0, 300.0]  # the current position, clipped to the limits
    assert f.counts.nan_blocked == 0


def test_estop_latches_and_blocks_everything():
    f = make_filter()
    f.engage_estop()
    f.engage_estop()
    assert f.estopped and f.counts.estops == 1
    assert f.filter(np.array([100.0, 100.0]), np.array([100.0, 100.0])).command is None
    assert f.hold(np.array([100.0, 100.0])).command is None
    f.release_estop()
    assert f.filter(np.array([100.0, 100.0]), np.array([100.0, 100.0])).command is not None


class _St:
    def __init__(self, rx_time: float) -> None:
        self.rx_time = rx_time


def test_link_watch_counts_losses_and_recoveries():
    w = LinkWatch(stale_timeout_s=0.2)
    assert w.check(True, _St(10.0), now=10.1)
    assert not w.check(True, _St(10.0), now=10.3)      # stale
    assert not w.check(False, _St(10.3), now=10.31)    # still lost: one event
    assert w.losses == 1 and w.lost and w.lost_since == pytest.approx(10.3)
    assert w.check(True, _St(10.4), now=10.45)
    assert w.recoveries == 1 and not w.lost
    assert not w.check(True, None, now=11.0)            # no State at all
    assert not w.check(True, _St(math.nan), now=11.0)
    assert w.losses == 2
