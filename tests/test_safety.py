"""runtime.safety: limits from device / robot config / package, step limits, NaN guard, e-stop, link watch."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.robot_config import RobotConfig, RobotConfigError, load_robot_config
from runtime.safety import (LinkWatch, SafetyConfigError, SafetyFilter, check_period, effective_limits,
                            parse_action_limits)


def caps(lower=(0.0, 0.0), upper=(512.0, 480.0), max_velocity=(0.0, 0.0), max_step=None, names=("x", "y")):
    c = SimpleNamespace(joint_names=tuple(names), lower=np.asarray(lower, np.float32),
                        upper=np.asarray(upper, np.float32), max_velocity=np.asarray(max_velocity, np.float32))
    if max_step is not None:
        c.max_step = np.asarray(max_step, np.float32)
    return c


def robot_config(text: str, tmp_path) -> RobotConfig:
    p = tmp_path / "robot.toml"
    p.write_text(text)
    return load_robot_config(p)


def make_filter(max_velocity=(0.0, 0.0), period=0.1, max_step=None) -> SafetyFilter:
    limits = effective_limits(caps(max_velocity=max_velocity, max_step=max_step), period, None,
                              {"low": [10.0, 20.0], "high": [500.0, 490.0]})
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


@pytest.mark.parametrize("spec, text", [
    ({"low": [float("nan"), 0.0], "high": [1.0, 1.0]}, "action 0 must be finite"),
    ({"low": [0.0, 0.0], "high": [1.0, float("inf")]}, "action 1 must be finite"),
    ({"low": [0.0, 5.0], "high": [1.0, 1.0]}, "action 1 are inverted"),
    ({"low": [0.0], "high": [1.0, 1.0]}, "action.low has 1 values"),
    ({"low": ["a", "b"], "high": [1.0, 1.0]}, "not numbers"),
])
def test_package_action_limits_nan_inverted_or_malformed_are_refused(spec, text):
    with pytest.raises(SafetyConfigError, match=text):
        parse_action_limits(spec, 2)


def test_limits_intersect_manifest_and_device():
    f = make_filter()
    assert f.limits.lower.tolist() == [10.0, 20.0]
    assert f.limits.upper.tolist() == [500.0, 480.0]  # the device's 480 is tighter than the package's 490
    assert f.limits.sources[1] == {"lower": "package", "upper": "device",
                                   "max_step": "default (10% of the device range)"}


def test_default_step_limit_when_nobody_declares_one():
    f = make_filter()  # device max velocity 0 and no max_step: a conservative default still applies
    assert f.limits.max_step.tolist() == pytest.approx([51.2, 48.0])  # 10% of the device's ranges
    # the shipped Push-T policy's largest step (30 px in 512 px) passes untouched
    res = f.filter(np.array([130.0, 70.0], np.float32), np.array([100.0, 100.0]))
    assert res.command.tolist() == [130.0, 70.0] and f.counts.rate_limited == 0
    res = f.filter(np.array([400.0, 70.0], np.float32), np.array([100.0, 100.0]))
    assert res.command.tolist() == pytest.approx([181.2, 70.0]) and f.counts.rate_limited == 1


def test_step_limit_is_the_smallest_declared_one(tmp_path):
    rc = robot_config("[joints.x]\nmax_step = 7.0\n[joints.y]\nmax_velocity = 30.0\n", tmp_path)
    lim = effective_limits(caps(max_velocity=(100.0, 100.0), max_step=(5.0, 0.0)), 0.1, rc)
    assert lim.max_step.tolist() == pytest.approx([5.0, 3.0])  # device max_step 5 < config 7; config 30/s * 0.1
    assert lim.sources[0]["max_step"] == "device max_step"
    assert lim.sources[1]["max_step"] == "robot config max_velocity"
    lim = effective_limits(caps(max_velocity=(100.0, 0.0), max_step=(0.0, 0.0)), 0.01)
    assert lim.max_step.tolist() == pytest.approx([1.0, 48.0])  # 0 = unknown: velocity, else the default
    assert lim.as_dict()["joints"]["x"]["max_step"] == pytest.approx(1.0)


def test_package_can_narrow_but_never_widen(tmp_path):
    rc = robot_config("[joints.x]\nlower = 50.0\nupper = 400.0\n", tmp_path)
    lim = effective_limits(caps(), 0.1, rc, {"low": [-1e9, 100.0], "high": [1e9, 200.0]})
    assert lim.lower.tolist() == [50.0, 100.0] and lim.upper.tolist() == [400.0, 200.0]
    assert lim.sources[0]["lower"] == "robot config" and lim.sources[1]["upper"] == "package"
    assert len(lim.notes) == 1 and "joint x" in lim.notes[0] and "wider" in lim.notes[0]
    f = SafetyFilter(lim)
    for _ in range(20):  # a hostile request is clipped to the robot's box and stepped towards it
        res = f.filter(np.array([-1e9, 1e9]), np.array([60.0, 150.0]))
        assert np.all(res.command >= lim.lower) and np.all(res.command <= lim.upper)
    assert res.command.tolist() == [50.0, 200.0]
    with pytest.raises(SafetyConfigError, match="do not overlap"):
        effective_limits(caps(), 0.1, None, {"low": [600.0, 0.0], "high": [700.0, 1.0]})
    with pytest.raises(SafetyConfigError, match="leaves nothing"):
        effective_limits(caps(), 0.1, robot_config("[joints.y]\nlower = 490.0\n", tmp_path))


@pytest.mark.parametrize("kw, text", [
    ({"lower": (float("nan"), 0.0)}, "joint x: limits must be finite"),
    ({"upper": (512.0, float("inf"))}, "joint y: limits must be finite"),
    ({"lower": (0.0, 500.0)}, "joint y: lower 500 is not below upper 480"),
    ({"max_velocity": (float("nan"), 0.0)}, "joint x: max_velocity must be finite"),
    ({"max_velocity": (-1.0, 0.0)}, "joint x: max_velocity must be finite and >= 0"),
    ({"max_step": (0.0, float("inf"))}, "joint y: max_step must be finite"),
    ({"lower": (0.0, 0.0, 0.0)}, "device lower limits has 3 values"),
])
def test_hostile_device_limits_are_refused(kw, text):
    with pytest.raises(SafetyConfigError, match=text) as info:
        effective_limits(caps(**kw), 0.1)
    assert "\n" not in str(info.value) and str(info.value).startswith("device")


def test_robot_config_naming_an_unknown_joint_is_refused(tmp_path):
    rc = robot_config("[joints.z]\nlower = 1.0\n", tmp_path)
    with pytest.raises(RobotConfigError, match=r"joint 'z' is not a joint of this robot \(it has x, y\)"):
        effective_limits(caps(), 0.1, rc)


@pytest.mark.parametrize("period", [float("inf"), float("nan"), 1e6, 0.0, -0.1, 1e-9, "abc", None])
def test_period_out_of_range_is_refused(period):
    with pytest.raises(SafetyConfigError, match="control period must be"):
        check_period(period)
    with pytest.raises(SafetyConfigError):
        effective_limits(caps(), period)


def test_no_reference_means_nothing_is_sent():
    f = make_filter()
    res = f.filter(np.array([100.0, 100.0]), None)  # no last command, position unknown: no step limit possible
    assert res.command is None and res.reason == "no-reference"
    res = f.filter(np.array([100.0, 100.0]), np.array([np.nan, 100.0]))
    assert res.command is None


def test_in_range_command_passes_bit_identical():
    f = make_filter()
    req = np.array([123.456789, 234.5678901], np.float32)
    res = f.filter(req, np.array([100.0, 200.0]))
    assert not res.held and res.command.dtype == np.float32
    assert res.command.tobytes() == req.tobytes()
    assert f.counts.clipped == 0 and f.counts.rate_limited == 0


def test_clip_to_position_limits():
    f = make_filter()
    res = f.filter(np.array([-5.0, 999.0], np.float32), np.array([20.0, 450.0]))
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
    f.filter(np.array([130.0, 230.0]), np.array([100.0, 200.0]))
    res = f.filter(np.array([1.0, np.inf]), np.array([100.0, 200.0]))
    assert res.command.tolist() == [130.0, 230.0]
    assert f.counts.nan_blocked == 2
    f.reset()
    res = f.filter(np.array([np.nan, np.nan]), np.array([np.nan, 5.0]))  # nothing safe is known: send nothing
    assert res.command is None and res.held
    res = f.filter(np.array([1.0, 2.0, 3.0]), np.array([100.0, 200.0]))  # wrong size counts as invalid
    assert res.held


def test_hold_when_no_action():
    f = make_filter()
    res = f.filter(None, np.array([400.0, 300.0]))
    assert res.held and res.command.tolist() == [400.0, 300.0]  # the current position
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


def test_robot_outside_the_box_is_brought_back_one_step_at_a_time():
    f = make_filter()  # box x in [10, 500], step 51.2
    res = f.filter(None, np.array([600.0, 300.0]))  # found outside the box (a narrower package range)
    assert res.held and 600.0 - res.command[0] <= 51.2 and res.command[0] < 600.0
    f.reset()
    cmds = [f.filter(np.array([450.0, 300.0]), np.array([600.0, 300.0])).command for _ in range(4)]
    xs = [600.0] + [float(c[0]) for c in cmds]
    assert all(0 < a - b <= 51.2 + 1e-9 for a, b in zip(xs, xs[1:]) if a > 450.0)  # never a jump to the box edge
    assert xs[-1] == 450.0


def test_float32_rounding_never_exceeds_the_step_or_the_box():
    # The device compares float32 targets with its float32 target in float64: a command stepped exactly
    # max_step in float64 could round past it (found by the HIL run with a tampered package).
    rng = np.random.default_rng(0)
    lim = effective_limits(caps(upper=(512.0, 512.0), max_step=(200.0, 0.3)), 0.1, None)
    for _ in range(2000):
        f = SafetyFilter(lim)
        cur = rng.uniform(0, 512, 2).astype(np.float32)
        req = rng.uniform(-1e9, 1e9, 2)
        cmd = f.filter(req, cur).command
        step = np.abs(cmd.astype(np.float64) - cur.astype(np.float64))
        assert np.all(step <= lim.max_step) and np.all(cmd >= 0) and np.all(cmd <= 512)
        nxt = f.filter(rng.uniform(-1e9, 1e9, 2), cur).command
        assert np.all(np.abs(nxt.astype(np.float64) - cmd.astype(np.float64)) <= lim.max_step)
    f = SafetyFilter(lim)
    cmd = f.filter(np.array([1e9, 0.0]), np.array([73.9268, 0.0], np.float32)).command
    assert abs(float(cmd[0]) - float(np.float32(73.9268))) <= 200.0
