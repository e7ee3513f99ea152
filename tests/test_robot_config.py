"""runtime.robot_config: the operator's robot configuration file, read as hostile input."""
from __future__ import annotations

import pytest

from runtime.robot_config import (DEFAULT_MAX_BAD_STATES, DEFAULT_STATE_MARGIN, MAX_FILE_BYTES, RobotConfigError,
                                  load_robot_config)

GOOD = """
[loop]
state_margin = 0.1
max_bad_states = 3
on_device_fault = "hold"
link_give_up_s = 2.5

[joints.agent_x]
lower = 10
upper = 500.5
max_velocity = 200.0

[joints.agent_y]
max_step = 30
"""


def load(tmp_path, text, name="robot.toml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return load_robot_config(p)


def test_good_config(tmp_path):
    rc = load(tmp_path, GOOD)
    assert rc.state_margin == 0.1 and rc.max_bad_states == 3 and rc.on_device_fault == "hold"
    assert rc.link_give_up_s == 2.5
    assert rc.joints["agent_x"].lower == 10.0 and rc.joints["agent_x"].upper == 500.5
    assert rc.joints["agent_x"].max_step is None and rc.joints["agent_y"].max_step == 30.0
    rc.check_joints(("agent_x", "agent_y"))
    d = rc.as_dict()
    assert d["joints"]["agent_y"] == {"max_step": 30.0} and d["source"].endswith("robot.toml")


def test_empty_config_keeps_the_defaults_and_missing_joints_are_allowed(tmp_path):
    rc = load(tmp_path, "")
    assert rc.joints == {} and rc.state_margin == DEFAULT_STATE_MARGIN
    assert rc.max_bad_states == DEFAULT_MAX_BAD_STATES and rc.on_device_fault is None
    rc = load(tmp_path, "[joints.agent_x]\nupper = 100.0\n")  # agent_y keeps the device's limits
    rc.check_joints(("agent_x", "agent_y"))


@pytest.mark.parametrize("text, message", [
    ("[joints.agent_x]\nlower = nan\n", "joints.agent_x.lower must be finite, got nan"),
    ("[joints.agent_x]\nupper = inf\n", "joints.agent_x.upper must be finite, got inf"),
    ("[joints.agent_x]\nmax_velocity = -inf\n", "max_velocity must be finite"),
    ("[joints.agent_x]\nlower = 10.0\nupper = 5.0\n", "joints.agent_x: lower 10 must be below upper 5"),
    ("[joints.agent_x]\nlower = 5.0\nupper = 5.0\n", "lower 5 must be below upper 5"),
    ("[joints.agent_x]\nmax_step = 0\n", "joints.agent_x.max_step must be > 0, got 0"),
    ("[joints.agent_x]\nmax_velocity = -1.0\n", "max_velocity must be > 0"),
    ("[joints.agent_x]\nlower = true\n", "joints.agent_x.lower must be a number, got True"),
    ("[joints.agent_x]\nlower = \"0\"\n", "must be a number, got '0'"),
    ("[joints.agent_x]\nlower = [0, 1]\n", "must be a number"),
    ("[joints.agent_x]\nlowr = 0\n", "unknown key 'lowr'"),
    ("[joints]\nagent_x = 5\n", "joints.agent_x must be a table"),
    ("joints = 5\n", "[joints] must be a table"),
    ("[robot]\nname = 'x'\n", "robot.type must be one of serial, emulator, franka, got None"),
    ("[robot]\ntype = 'usb'\n", "robot.type must be one of serial, emulator, franka, got 'usb'"),
    ("[robot]\ntype = 'serial'\nport = 5\n", "robot.port takes a string, got 5"),
    ("[robot]\ntype = 'serial'\nbaudrate = 1.5\n", "robot.baudrate takes an integer, got 1.5"),
    ("[robot]\ntype = 'serial'\nbaudrate = true\n", "robot.baudrate takes an integer, got True"),
    ("[robot]\ntype = 'serial'\nspeed = 1\n", "unknown key 'speed' for a serial robot (fields: port, "),
    ("[robot]\ntype = 'franka'\nport = '/dev/x'\n", "unknown key 'port' for a franka robot"),
    ("robot = 5\n", "[robot] must be a table"),
    ("[obs_map]\nblock_x = 1\n", "[obs_map]: names must be printable strings"),
    ("[joint_map]\nagent_x = ''\n", "[joint_map]: names must be printable strings"),
    ("obs_map = 'a=b'\n", "[obs_map] must be a table"),
    ("[sensors]\nx = 1\n", "unknown key 'sensors'"),
    ("[loop]\nstate_margin = 5.0\n", "loop.state_margin is a fraction of the joint range in [0, 1], got 5"),
    ("[loop]\nstate_margin = nan\n", "loop.state_margin must be finite"),
    ("[loop]\nmax_bad_states = 0\n", "loop.max_bad_states must be an integer in [1, 10000], got 0"),
    ("[loop]\nmax_bad_states = 1e9\n", "max_bad_states must be an integer"),
    ("[loop]\nmax_bad_states = 99999999999\n", "max_bad_states must be an integer"),
    ("[loop]\non_device_fault = \"ignore\"\n", "on_device_fault must be one of stop, hold, got 'ignore'"),
    ("[loop]\nlink_give_up_s = 1e9\n", "link_give_up_s must be in [0.1, 3600] s"),
    ("[loop]\nperiod = 0.1\n", "[loop]: unknown key 'period'"),
    ("[joints.agent_x]\nlower = 1.0\nupper =", "is not valid TOML"),            # truncated
    ("[joints.agent_x\nlower = 1.0\n", "is not valid TOML"),
    ("[joints.agent_x]\nlower = 1.0\nlower = 2.0\n", "is not valid TOML"),     # duplicate key
])
def test_hostile_values_are_refused_on_one_line(tmp_path, text, message):
    with pytest.raises(RobotConfigError) as info:
        load(tmp_path, text)
    msg = str(info.value)
    assert message in msg and "\n" not in msg and "robot.toml" in msg


def test_unknown_joint_is_refused(tmp_path):
    rc = load(tmp_path, "[joints.agent_z]\nlower = 0.0\n")
    with pytest.raises(RobotConfigError, match=r"joint 'agent_z' is not a joint of this robot \(it has agent_x, "
                                               r"agent_y\)"):
        rc.check_joints(("agent_x", "agent_y"))


def test_file_level_problems(tmp_path):
    with pytest.raises(RobotConfigError, match="does not exist"):
        load_robot_config(tmp_path / "missing.toml")
    with pytest.raises(RobotConfigError, match="not a regular file"):
        load_robot_config(tmp_path)
    with pytest.raises(RobotConfigError, match="not UTF-8"):
        load(tmp_path, b"[loop]\nstate_margin = 0.1 # \xff\xfe\n")
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:  # sparse: no megabytes written
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(RobotConfigError, match="the limit is"):
        load_robot_config(big)
    with pytest.raises(RobotConfigError):  # deeply nested inline arrays: refused, not a RecursionError
        load(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
