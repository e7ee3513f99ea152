"""imle-run at the robot boundary with in-process fakes: exit codes, outputs written whatever happens,
one-line errors for hostile arguments and robot configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_bridge.protocol import Fault
from runtime import cli
from runtime.robots import RobotHandle

from test_loop import FakePolicy  # noqa: E402  (tests/ is on sys.path)
from test_loop_safety import BoundaryRobot, _bad  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "exported_models" / "pusht-state-imle"


class CliPolicy(FakePolicy):
    precision, candidates, temporal_consistency, tc_reset_after = "fp32", 4, True, 5


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """Run cli.main with a fake policy and robot; returns (exit code, robot, out dir)."""
    import runtime.robots

    def go(robot, *extra):
        def make_robot(settings, period_s=None, package=None):
            robot.settings = settings
            return RobotHandle(settings.label(), robot, robot.capabilities)

        monkeypatch.setattr(cli, "_load_policy", lambda args: CliPolicy(0, period=0.02))
        monkeypatch.setattr(runtime.robots, "make_robot", make_robot)
        out = tmp_path / "out"
        code = cli.main(["pkg", "--robot", "emulator", "--max-steps", "12", "--status", "off", "--out", str(out),
                         *map(str, extra)])
        return code, out
    return go


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_clean_run_exits_0(fake_run, capsys):
    robot = BoundaryRobot()
    code, out = fake_run(robot)
    assert code == 0 and summary(out)["exit_code"] == 0 and summary(out)["outcome"] == "clean"
    assert "outcome: clean (exit 0)" in capsys.readouterr().out
    assert robot.settings.takeover is False
    robot = BoundaryRobot()
    assert fake_run(robot, "--takeover")[0] == 0 and robot.settings.takeover is True


def test_error_mid_run_still_writes_every_output_and_estops(fake_run, capsys):
    robot = BoundaryRobot()
    robot.reset_error_at = 1  # the device is unplugged before the second episode
    code, out = fake_run(robot, "--episodes", 3)
    cap = capsys.readouterr()
    assert code == 4 and robot.estop_calls == [True]
    s = summary(out)
    assert s["stop_reason"].startswith("error inside the run: LinkError") and s["estop"]["confirmed"]
    assert (out / "steps.csv").stat().st_size > 0
    assert "STOPPED: error inside the run" in cap.out and "Traceback" not in cap.err
    assert "imle-run: stopped: error inside the run: LinkError: /dev/ttyACM0 vanished" in cap.err


def test_unconfirmed_estop_exits_5_loudly(fake_run, capsys):
    robot = BoundaryRobot()
    robot.reset_error_at = 1
    robot.estop_replies = [False] * 100_000
    code, out = fake_run(robot, "--episodes", 2)
    cap = capsys.readouterr()
    assert code == 5 and not summary(out)["estop"]["confirmed"]
    assert "E-STOP NOT CONFIRMED" in cap.err and "e-stop engaged" not in cap.out


def test_refused_commands_exit_3_with_hold_and_4_with_stop(fake_run, capsys):
    robot = BoundaryRobot()
    robot.faults_fn = lambda n: [Fault(11, "jump refused")]
    code, out = fake_run(robot, "--on-device-fault", "hold")
    s = summary(out)
    assert code == 3 and s["counters"]["refused_commands"] == 12
    assert s["device_reports"]["faults"] == {"IMPLAUSIBLE": 12}
    robot = BoundaryRobot()
    robot.faults_fn = lambda n: [Fault(11, "jump refused")]
    code, out = fake_run(robot)
    assert code == 4 and summary(out)["stop_reason"] == "device fault IMPLAUSIBLE: jump refused"


def test_estopped_device_is_refused_unless_released(fake_run, capsys):
    robot = BoundaryRobot()
    robot.flags = 0x1
    code, out = fake_run(robot)
    assert code == 4 and not robot.sent and "--release-estop" in capsys.readouterr().err
    robot = BoundaryRobot()
    robot.flags = 0x1
    code, out = fake_run(robot, "--release-estop")
    assert code == 0 and robot.estop_calls == [False] and len(robot.sent) == 12


def test_bad_states_exit_4_and_robot_config_settings_apply(fake_run, tmp_path, capsys):
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[loop]\nmax_bad_states = 2\n[joints.agent_x]\nmax_step = 5.0\n")
    robot = BoundaryRobot()
    robot.state_fn = _bad("nan")
    code, out = fake_run(robot, "--robot-config", cfg)
    s = summary(out)
    assert code == 4 and s["stop_reason"].startswith("2 bad States in a row")
    assert s["limits"]["joints"]["agent_x"]["max_step"] == 5.0 and s["limits"]["max_bad_states"] == 2
    assert "limits: agent_x [0, 512] step 5" in capsys.readouterr().out


@pytest.mark.parametrize("args, text", [
    (["--period", "inf"], "--period must be between 0.001 and 10 s, got inf"),
    (["--period", "nan"], "--period must be between"),
    (["--period", "1e6"], "--period must be between 0.001 and 10 s, got 1000000.0"),
    (["--period", "0"], "--period must be between"),
    (["--robot-config", "/nonexistent/robot.toml"], "robot config /nonexistent/robot.toml does not exist"),
    (["--inject-jump", "x"], "--inject-jump takes STEP:PX[:COUNT]"),
    (["--out", "/proc/imle-run-out"], "--out /proc/imle-run-out: cannot write there"),
    (["--robot", "franka:1.2.3.4", "--takeover"], "--takeover applies to serial devices"),
    (["--link-error-budget", "nan"], "--link-error-budget must be a fraction in [0, 1], got nan"),
    (["--link-error-budget", "-0.01"], "--link-error-budget must be a fraction in [0, 1], got -0.01"),
    (["--link-error-budget", "1e308"], "--link-error-budget must be a fraction in [0, 1], got 1e+308"),
    (["--link-error-budget", "inf"], "--link-error-budget must be a fraction in [0, 1], got inf"),
])
def test_hostile_arguments_are_one_line_errors(args, text, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_load_policy", lambda a: pytest.fail("loaded the package before checking arguments"))
    argv = ["pkg", "--robot", "emulator", *args] if "--robot" not in args else ["pkg", *args]
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imle-run: error:") and text in lines[0], lines


def test_hostile_robot_config_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_load_policy", lambda a: pytest.fail("loaded the package before the robot config"))
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[joints.agent_x]\nlower = nan\n")
    assert cli.main(["pkg", "--robot", "emulator", "--robot-config", str(cfg)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "joints.agent_x.lower must be finite, got nan" in lines[0]


def test_robot_config_naming_a_missing_joint_is_a_one_line_error(fake_run, tmp_path, capsys):
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[joints.shoulder]\nupper = 1.0\n")
    code, _ = fake_run(BoundaryRobot(), "--robot-config", cfg)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "'shoulder' is not a joint of this robot" in lines[0]


@pytest.mark.skipif(not (SHIPPED / "manifest.json").exists(), reason="no shipped package")
def test_a_million_candidates_is_one_line(capsys):
    assert cli.main([str(SHIPPED), "--robot", "emulator", "--candidates", "1000000"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imle-run: error: cannot load") and "candidates" in lines[0]


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code in ("0 ", "2 ", "3 ", "4 ", "5 ", "130"):
        assert f"\n  {code}" in out
    assert "E-STOP" not in out and "did NOT confirm" in out and "--release-estop" in out
