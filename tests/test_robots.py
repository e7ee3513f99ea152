"""#17: robot configurations as dataclasses in one registry; imle-run's --robot.FIELD options generated
from their fields; the robot config's [robot] table; shorthands; Franka settings without env vars."""
from __future__ import annotations

import pytest

from runtime import cli, robots
from runtime.robots import (REGISTRY, EmulatorConfig, FrankaConfig, RobotHandle, RobotSpecError, SerialConfig,
                            build_settings, parse_spec)
from runtime.robot_config import RobotConfigError, load_robot_config

from test_cli_safety import CliPolicy  # noqa: E402  (tests/ is on sys.path)
from test_loop_safety import BoundaryRobot  # noqa: E402


def test_registry_and_shorthands():
    assert set(REGISTRY) == {"serial", "emulator", "franka"}
    assert build_settings("serial:/dev/x", {})[0] == SerialConfig(port="/dev/x")
    assert build_settings("emulator", {})[0] == EmulatorConfig()
    assert build_settings("emulator-lockstep", {})[0] == EmulatorConfig(mode="lockstep")
    assert build_settings("franka:172.16.0.2", {})[0] == FrankaConfig(host="172.16.0.2")
    for bad in ("usb0", "serial:", "franka", "", "emulator-fast"):
        if bad == "franka":
            with pytest.raises(RobotSpecError, match="a franka robot needs --robot.host"):
                build_settings(bad, {})
            continue
        with pytest.raises(RobotSpecError, match="bad --robot spec"):
            parse_spec(bad)


def test_fields_from_the_command_line_with_types_and_validation():
    s, _ = build_settings("serial", {"port": "/dev/x", "baudrate": "115200", "takeover": "true"})
    assert s == SerialConfig(port="/dev/x", baudrate=115200, takeover=True)
    s, _ = build_settings("emulator", {"mode": "lockstep", "state_hz": "100", "max_step": "50"})
    assert s == EmulatorConfig(mode="lockstep", state_hz=100.0, max_step=50.0)
    cases = [
        ("serial", {}, "a serial robot needs --robot.port"),
        ("serial", {"port": "/dev/x", "baudrate": "fast"}, "--robot.baudrate takes an integer, got 'fast'"),
        ("serial", {"port": "/dev/x", "baudrate": "0"}, "robot.baudrate must be in 1..100000000, got 0"),
        ("serial", {"port": "/dev/x", "takeover": "maybe"}, "--robot.takeover takes true or false, got 'maybe'"),
        ("serial", {"port": "/dev/x", "state_timeout_s": "nan"}, "robot.state_timeout_s must be a finite number > 0"),
        ("emulator", {"mode": "fast"}, "robot.mode must be one of realtime, lockstep, got 'fast'"),
        ("emulator", {"state_hz": "inf"}, "robot.state_hz must be a finite number > 0"),
        ("emulator", {"port": "/dev/x"}, "--robot.port does not apply to a emulator robot (its fields: mode, "),
        ("franka:h", {"arm": "ur5"}, "robot.arm must be one of fr3, fer, got 'ur5'"),
        ("franka:h", {"late_commands": "sometimes"}, "robot.late_commands must be one of auto, dropped, applied"),
    ]
    for spec, values, text in cases:
        with pytest.raises(RobotSpecError) as e:
            build_settings(spec, values)
        assert text in str(e.value) and "\n" not in str(e.value), (spec, values, str(e.value))


def test_robot_table_in_the_robot_config_and_cli_overrides(tmp_path):
    p = tmp_path / "robot.toml"
    p.write_text('[robot]\ntype = "serial"\nport = "/dev/ttyACM7"\nbaudrate = 115200\n')
    rc = load_robot_config(p)
    s, notes = build_settings(None, {}, rc.robot)
    assert s == SerialConfig(port="/dev/ttyACM7", baudrate=115200) and not notes
    s, _ = build_settings(None, {"port": "/dev/ttyUSB0"}, rc.robot)  # --robot.port overrides the file
    assert s.port == "/dev/ttyUSB0" and s.baudrate == 115200
    s, _ = build_settings("serial:/dev/ttyS1", {}, rc.robot)  # the shorthand overrides the file's port
    assert s.port == "/dev/ttyS1" and s.baudrate == 115200
    s, notes = build_settings("emulator", {}, rc.robot)  # another type: the file's fields are not used
    assert s == EmulatorConfig() and "ignored" in notes[0]
    assert rc.as_dict()["robot"] == {"type": "serial", "port": "/dev/ttyACM7", "baudrate": 115200}
    with pytest.raises(RobotSpecError, match="no robot: give --robot"):
        build_settings(None, {}, None)


def test_franka_settings_reach_the_constructor_without_environment_variables(monkeypatch):
    from firmware_bridge import franka
    from firmware_bridge.robot import HandshakeError

    for var in ("IMLE_FRANKA_ARM", "IMLE_FRANKA_REALTIME", "IMLE_FRANKA_LATE_COMMANDS"):
        monkeypatch.setenv(var, "garbage")  # never read when the fields are given
    made = []

    def connect(self):
        made.append(self)
        raise HandshakeError("no arm here")

    monkeypatch.setattr(franka.FrankaRobot, "connect", connect)
    monkeypatch.setattr(franka.FrankaRobot, "close", lambda self: None)
    cfg = FrankaConfig(host="172.16.0.2", arm="fer", realtime="ignore", late_commands="applied",
                       connect_timeout_s=5.0)
    with pytest.raises(HandshakeError):
        robots.make_robot(cfg)
    r = made[0]
    assert r.arm is franka.ARMS["fer"] and r.realtime is False and r.late_commands == "applied"
    assert r.connect_timeout_s == 5.0 and r.host == "172.16.0.2"
    # a field left unset still falls back to the variable, and a bad one is a one-line RobotSpecError
    with pytest.raises(RobotSpecError, match="--robot franka:172.16.0.2: unknown Franka arm 'garbage'"):
        robots.make_robot(FrankaConfig(host="172.16.0.2", realtime="ignore", late_commands="applied"))


# ----------------------------------------------------------------------------- imle-run
@pytest.fixture
def cli_run(monkeypatch, tmp_path):
    """cli.main with a fake policy; records the robot settings make_robot was given."""
    seen = []

    def make_robot(settings, period_s=None, package=None):
        seen.append(settings)
        robot = BoundaryRobot()
        return RobotHandle(settings.label(), robot, robot.capabilities)

    monkeypatch.setattr(cli, "_load_policy", lambda args: CliPolicy(0, period=0.02))
    monkeypatch.setattr(robots, "make_robot", make_robot)

    def go(*argv):
        code = cli.main(["pkg", "--max-steps", "4", "--status", "off", *map(str, argv)])
        return code, seen
    return go


def test_cli_robot_options_are_generated_from_the_dataclasses(cli_run, capsys):
    code, seen = cli_run("--robot", "emulator", "--robot.mode", "lockstep", "--robot.state_hz", "200")
    assert code == 0 and seen[-1] == EmulatorConfig(mode="lockstep", state_hz=200.0)
    help_text = cli.build_parser().format_help()
    for name in ("--robot.port", "--robot.baudrate", "--robot.mode", "--robot.host", "--robot.late_commands"):
        assert name in help_text
    assert "(franka) fr3 or fer" in " ".join(help_text.split())  # help from the field's metadata


@pytest.mark.parametrize("argv, text", [
    (["--robot", "serial", "--robot.port", "/nonexistent/tty"], "serial port /nonexistent/tty does not exist"),
    (["--robot", "serial", "--robot.speed", "9"], "unknown robot option --robot.speed (robot fields: port, "),
    (["--robot", "serial", "--robot.port", "/dev/null", "--robot.baudrate", "x"],
     "--robot.baudrate takes an integer, got 'x'"),
    (["--robot", "emulator", "--robot.host", "h"], "--robot.host does not apply to a emulator robot"),
    (["--robot", "franka"], "a franka robot needs --robot.host"),
    (["--robot", "franka:h", "--takeover"], "--takeover applies to serial devices"),
    ([], "no robot: give --robot"),
    (["--robot", "emulator", "--obs-map", "block_x"], "--obs-map takes NAME=ROBOT_NAME"),
    (["--robot", "emulator", "--joint-map", "a=b,a=c"], "--joint-map: 'a' is mapped twice"),
    (["--robot", "emulator", "--obs-map", "block_x=bx"], "obs map: 'bx' is not reported by the robot"),
])
def test_cli_robot_mistakes_are_one_line_errors(cli_run, capsys, argv, text):
    code, _ = cli_run(*argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and text in err[0] and "Traceback" not in err[0], err


def test_cli_takes_the_robot_from_the_robot_config(cli_run, tmp_path, capsys):
    p = tmp_path / "robot.toml"
    p.write_text('[robot]\ntype = "emulator"\nmode = "lockstep"\n[obs_map]\ncoverage = "coverage"\n')
    code, seen = cli_run("--robot-config", p)
    assert code == 0 and seen[-1] == EmulatorConfig(mode="lockstep")
    code, seen = cli_run("--robot-config", p, "--robot.mode", "realtime")
    assert code == 0 and seen[-1] == EmulatorConfig(mode="realtime")
    p.write_text('[robot]\ntype = "emulator"\nmode = 5\n')
    code, _ = cli_run("--robot-config", p)
    assert code == 2 and "robot.mode takes one of realtime, lockstep, got 5" in capsys.readouterr().err


def test_robot_config_errors_name_the_file(tmp_path):
    p = tmp_path / "robot.toml"
    p.write_text('[robot]\ntype = "franka"\narm = "ur5"\nhost = "h"\n')
    rc = load_robot_config(p)  # types are checked at load; ranges when the configuration is built
    with pytest.raises(RobotSpecError, match="robot.arm must be one of fr3, fer, got 'ur5'"):
        build_settings(None, {}, rc.robot)
    p.write_text('[robot]\ntype = "franka"\nhost = 7\n')
    with pytest.raises(RobotConfigError, match="robot.toml: robot.host takes a string, got 7"):
        load_robot_config(p)
