"""runtime.state_check and runtime.device_reports: States and device reports as hostile input."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from firmware_bridge.protocol import Fault, State
from runtime.device_reports import DeviceReports, code_name
from runtime.state_check import StateCheck

CAPS = SimpleNamespace(joint_names=("x", "y"), extra_names=("a", "b"), lower=np.zeros(2, np.float32),
                       upper=np.array([100.0, 200.0], np.float32))


def st(pos=(10.0, 20.0), ext=(1.0, 2.0), flags=0):
    return State(0, pos, ext, flags=flags)


@pytest.mark.parametrize("state, reason, text", [
    (None, "missing", "no State"),
    (st(pos=(1.0,)), "joint count", "1 joint positions, the device declared 2"),
    (st(pos=(1.0, 2.0, 3.0)), "joint count", "3 joint positions"),
    (st(ext=()), "extra count", "0 extras, the device declared 2"),
    (st(pos=(np.nan, 1.0)), "non-finite", "position x is nan"),
    (st(ext=(1.0, -np.inf)), "non-finite", "extra b is -inf"),
    (st(pos=(1e30, 1.0)), "out of limits", "x = 1e+30 is outside the device limits [0, 100] by more than 5"),
    (st(pos=(1.0, -10.01)), "out of limits", "y = -10.01 is outside"),
    (SimpleNamespace(positions="abc", extras=()), "malformed", "malformed"),
])
def test_bad_states_are_named(state, reason, text):
    check = StateCheck.for_device(CAPS, margin_fraction=0.05)
    key, msg = check.problem(state)
    assert key == reason and text in msg and "\n" not in msg


def test_margin_and_counts():
    check = StateCheck.for_device(CAPS, margin_fraction=0.05, max_bad=2)
    assert check.check(st(pos=(104.9, -9.9)))       # within 5% of each range outside the limits
    assert not check.check(st(pos=(np.nan, 0.0)))
    assert check.check(st())                         # a good State resets the run of bad ones
    assert not check.check(st(ext=()))
    assert not check.exhausted
    assert not check.check(st(pos=(1e30, 0.0)))
    assert check.exhausted and check.bad_total == 3
    assert check.by_reason == {"non-finite": 1, "extra count": 1, "out of limits": 1}
    assert check.stop_reason().startswith("2 bad States in a row (last: State position x = 1e+30")
    zero = StateCheck.for_device(CAPS, margin_fraction=0.0)
    assert zero.check(st(pos=(100.0, 0.0))) and not zero.check(st(pos=(100.001, 0.0)))


def test_device_reports_classify_faults():
    r = DeviceReports()
    assert r.on_faults([]) is None
    v = r.on_faults([(1, "WATCHDOG", "held"), (3, "BAD_FRAME", ""), (2, "LIMIT", "")])
    assert v is None and r.total_faults == 3 and r.refused == 0
    v = r.on_faults([(11, "IMPLAUSIBLE", "jump"), (4, "ESTOP", "refused")])
    assert v.kind == "estop" and r.refused == 2  # the e-stop outranks the fault
    v = r.on_faults([(6, "BAD_COMMAND", "nan"), (99, "code 99", "")])
    assert v.kind == "fault"
    assert r.on_faults([(4, "ESTOP", "")], estop_ours=True) is None  # after the host's own e-stop: expected
    assert r.faults == {"WATCHDOG": 1, "BAD_FRAME": 1, "LIMIT": 1, "IMPLAUSIBLE": 1, "ESTOP": 2, "BAD_COMMAND": 1,
                        "code 99": 1}
    assert r.as_dict()["refused_commands"] == 4


def test_device_text_is_untrusted():
    class Robot:
        def take_faults(self):
            return [Fault(11, "line one\nline two\x1b[31m" + "x" * 400), SimpleNamespace(code="weird", text=None)]

    out = DeviceReports().drain(Robot())
    assert out[0][0] == 11 and out[0][1] == "IMPLAUSIBLE"
    assert "\n" not in out[0][2] and "\x1b" not in out[0][2] and len(out[0][2]) <= 160
    assert out[1][0] is None and out[1][1] == "weird"
    assert code_name(250) == "code 250"


def test_flags():
    r = DeviceReports(fault_flag_limit=2)
    assert r.on_state(st(flags=0x2)) is None                 # WATCHDOG_HOLD: counted only
    assert r.on_state(st(flags=0x4)) is None
    assert r.on_state(st(flags=0x4)).kind == "fault"         # FAULT twice in a row
    assert r.on_state(st(flags=0x1)).kind == "estop"
    assert r.on_state(st(flags=0x1), estop_ours=True) is None
    assert r.flag_states == {"WATCHDOG_HOLD": 1, "FAULT": 2, "ESTOP": 2}


def test_a_state_seen_again_is_not_counted_again():
    r = DeviceReports(fault_flag_limit=3)
    stale = st(flags=0x4)  # the link is lost: the loop keeps looking at the last State it got
    assert all(r.on_state(stale) is None for _ in range(10))
    assert r.flag_states == {"FAULT": 1}
    estopped = st(flags=0x1)
    assert r.on_state(estopped).kind == "estop" and r.on_state(estopped).kind == "estop"  # still a stop
    assert r.flag_states == {"FAULT": 1, "ESTOP": 1}


def test_fault_flag_counts_only_when_commands_went_out():
    r = DeviceReports(fault_flag_limit=2)
    assert all(r.on_state(st(flags=0x4), commanded=False) is None for _ in range(5))  # link lost: nothing sent
    assert r.on_state(st(flags=0x4), commanded=True) is None
    assert r.on_state(st(flags=0x4), commanded=True).kind == "fault"
