"""#17: a task's names bound to a robot's strictly by name (observations, action joints, success signal),
the operator's explicit maps, and success taken from the task, through the control loop."""
from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.protocol import State
from runtime.binding import ActionMapper, MappingError, TaskNames, parse_name_map, task_names_of
from runtime.loop import LoopConfig, LoopError
from runtime.robot_config import load_robot_config

from test_loop import ControlLoop, FakePolicy, FakeRobot, pusht_caps, run_episodes, task_spec  # noqa: E402


def lockstep(**kw) -> LoopConfig:
    return LoopConfig(**{"lockstep": True, "max_steps": 12, **kw})


class RenamedRobot(FakeRobot):
    """A Push-T plant that names its channels its own way (and may list its joints in another order)."""

    def __init__(self, joints=("agent_x", "agent_y"), extras=("bx", "by", "theta", "cov"), **kw) -> None:
        super().__init__(lockstep=True, **kw)
        self.capabilities = pusht_caps(True, joints, extras)
        self.swapped = tuple(joints) == ("agent_y", "agent_x")

    def _state(self) -> State:
        pos = self.pos[::-1].copy() if self.swapped else self.pos
        return State(0, pos, [300.0, 300.0, 1.0, self.coverage], rx_time=0.0)

    def send_command(self, targets, valid=True):
        t = np.asarray(targets, np.float32)
        return super().send_command(t[::-1].copy() if self.swapped else t, valid)


# ----------------------------------------------------------------------------- refusals
def test_observation_names_the_robot_does_not_report_are_refused_with_both_lists():
    with pytest.raises(LoopError) as e:
        ControlLoop(FakePolicy(0), RenamedRobot(), lockstep())
    msg = str(e.value)
    assert "\n" not in msg
    assert "the policy observes block_x, block_y, block_angle which the robot does not report" in msg
    assert "policy observes: agent_x, agent_y, block_x, block_y, block_angle" in msg
    assert "robot reports: agent_x, agent_y, bx, by, theta, cov" in msg


def test_action_joints_the_robot_does_not_have_are_refused_with_both_lists():
    policy = FakePolicy(0, task=task_spec(joints=("x", "y")))
    with pytest.raises(LoopError) as e:
        ControlLoop(policy, FakeRobot(lockstep=True), lockstep())
    msg = str(e.value)
    assert "the task commands joints x, y that the robot does not have" in msg
    assert "task joints: x, y; robot joints: agent_x, agent_y" in msg and "--joint-map" in msg


def test_robot_joints_the_task_does_not_command_are_refused_as_ambiguous():
    with pytest.raises(MappingError, match=r"the robot has joints j3 that the task does not command \(ambiguous"):
        ActionMapper(["j1", "j2"], ["j1", "j2", "j3"])
    with pytest.raises(MappingError, match="robot joint 'j1' is commanded by more than one action dimension"):
        ActionMapper(["a", "b"], ["j1", "j2"], {"a": "j1", "b": "j1"})
    with pytest.raises(MappingError, match="joint map: 'c' is not a joint the task commands"):
        ActionMapper(["a", "b"], ["a", "b"], {"c": "a"})
    with pytest.raises(MappingError, match="joint map: 'z' is not a joint of this robot"):
        ActionMapper(["a", "b"], ["a", "b"], {"a": "z"})


def test_success_signal_the_robot_does_not_report_is_refused():
    policy = FakePolicy(0, task=task_spec(success=("reward", 0.9)))
    with pytest.raises(LoopError, match="success signal 'reward' is not reported by the robot"):
        ControlLoop(policy, FakeRobot(lockstep=True), lockstep())


def test_a_package_without_task_spec_names_its_action_dimensions_as_joints():
    # An older export: its action names (target_x, target_y) are not the robot's joints: refused, never
    # mapped by position; the operator can map them explicitly.
    policy = FakePolicy(0)
    policy.manifest.task_spec = None
    with pytest.raises(LoopError, match="the task commands joints target_x, target_y that the robot does not have"):
        ControlLoop(policy, FakeRobot(lockstep=True), lockstep())
    robot = FakeRobot(lockstep=True, coverage_step=0.2)  # coverage would pass 0.95: there is no signal
    stats = run_episodes(policy, robot, lockstep(joint_map={"target_x": "agent_x", "target_y": "agent_y"}))
    assert stats.episodes[0].steps == 12 and not stats.episodes[0].success
    s = stats.summary()
    assert s["success_signal"] is None and s["task"]["source"] == "manifest"


# ----------------------------------------------------------------------------- explicit maps
def test_explicit_obs_map_binds_renamed_channels_and_equals_the_plain_run():
    plain = FakeRobot(lockstep=True)
    run_episodes(FakePolicy(0), plain, lockstep())
    renamed = RenamedRobot()
    obs_map = {"block_x": "bx", "block_y": "by", "block_angle": "theta", "coverage": "cov"}
    stats = run_episodes(FakePolicy(0), renamed, lockstep(obs_map=obs_map))
    assert [t.tobytes() for _, t in renamed.sent] == [t.tobytes() for _, t in plain.sent]
    assert stats.summary()["task"]["observations"]["block_angle"] == "theta"


def test_obs_map_from_the_robot_config_file_and_cli_override(tmp_path):
    p = tmp_path / "robot.toml"
    p.write_text('[obs_map]\nblock_x = "bx"\nblock_y = "by"\nblock_angle = "nope"\ncoverage = "cov"\n')
    rc = load_robot_config(p)
    assert rc.obs_map["block_x"] == "bx"
    with pytest.raises(LoopError, match="obs map: 'nope' is not reported by the robot"):
        ControlLoop(FakePolicy(0), RenamedRobot(), lockstep(robot_config=rc))
    stats = run_episodes(FakePolicy(0), RenamedRobot(), lockstep(robot_config=rc, obs_map={"block_angle": "theta"}))
    assert stats.episodes[0].steps == 12


def test_action_dimensions_reach_their_joints_by_name_when_the_robot_lists_them_in_another_order():
    plain = FakeRobot(lockstep=True)
    run_episodes(FakePolicy(0), plain, lockstep())
    # the robot lists agent_y first: the policy's target_x must still drive agent_x
    swapped = RenamedRobot(joints=("agent_y", "agent_x"), extras=("block_x", "block_y", "block_angle", "coverage"))
    stats = run_episodes(FakePolicy(0), swapped, lockstep())
    assert [t.tobytes() for _, t in swapped.sent] == [t.tobytes() for _, t in plain.sent]
    assert stats.summary()["task"]["action_joints"] == {"target_x": "agent_x", "target_y": "agent_y"}
    rows = [r for r in stats.step_log.rows if r.action is not None]
    assert np.allclose(rows[0].command[::-1], rows[0].action)  # commands are in the robot's joint order


# ----------------------------------------------------------------------------- success from the task
def test_success_signal_and_threshold_come_from_the_task():
    # The task's signal is a joint here (agent_x passes 160): the episode ends with success at once.
    policy = FakePolicy(0, task=task_spec(success=("agent_x", 160.0)))
    robot = FakeRobot(lockstep=True)
    stats = run_episodes(policy, robot, lockstep(max_steps=100))
    ep = stats.episodes[0]
    assert ep.success and ep.steps < 100 and ep.max_progress >= 160.0
    assert robot.sent[-1][1][0] >= 160.0 - 12.0  # ended just after the signal crossed (fake moves ~3-12/step)
    s = stats.summary()
    assert s["success_signal"] == "agent_x" and s["success_threshold"] == 160.0 and s["success_rate"] == 1.0
    # the same run with a threshold never reached goes to the step limit
    stats = run_episodes(FakePolicy(0, task=task_spec(success=("agent_x", 1e6))), FakeRobot(lockstep=True),
                         lockstep(max_steps=30))
    assert not stats.episodes[0].success and stats.episodes[0].steps == 30


def test_no_coverage_in_the_generic_loop():
    import runtime.loop
    from pathlib import Path
    assert "coverage" not in Path(runtime.loop.__file__).read_text().lower()


# ----------------------------------------------------------------------------- pieces
def test_parse_name_map():
    assert parse_name_map("a=b, c = d") == {"a": "b", "c": "d"}
    assert parse_name_map(None) == {}
    for bad, text in (("a", "takes NAME=ROBOT_NAME"), ("a=", "takes NAME=ROBOT_NAME"), ("=b", "takes"),
                      ("a=b,,c=d", "takes"), ("a=b,a=c", "'a' is mapped twice"), ("a=\x00", "printable"),
                      ("a=" + "x" * 300, "printable strings of 1..256")):
        with pytest.raises(MappingError, match=text):
            parse_name_map(bad, "--obs-map")


def test_task_names_from_a_task_spec_and_from_an_older_manifest():
    t = task_names_of(FakePolicy(0).manifest)
    assert t.action_joints == ("agent_x", "agent_y") and t.success_signal == "coverage" and t.source == "task_spec"
    m = FakePolicy(0).manifest
    m.task_spec = None
    t = task_names_of(m)
    assert t.action_joints == ("target_x", "target_y") and t.success_signal is None and t.source == "manifest"
    with pytest.raises(MappingError, match="names observation 'a' twice"):
        TaskNames(("a", "a"), ("x",), ("x",))
    with pytest.raises(MappingError, match="success threshold must be finite"):
        TaskNames(("a",), ("x",), ("x",), "a", float("nan"))


def test_task_action_limits_narrow_the_box_and_follow_their_joints():
    from runtime.task_spec import StateObs, TaskAction, TaskHorizons, TaskSpec
    from test_loop import PUSHT_OBS, TA, TO, TP

    spec = TaskSpec("narrow", 0.02, TaskHorizons(TO, TP, TA), StateObs("state", tuple(PUSHT_OBS)),
                    TaskAction("action", ("target_y", "target_x"), ("agent_y", "agent_x"), (20.0, 10.0),
                               (400.0, 300.0)))
    policy = FakePolicy(0)
    policy.manifest.task_spec = spec.to_dict()
    loop = ControlLoop(policy, FakeRobot(lockstep=True), lockstep())
    try:  # the package's range is [0, 512]; the task's is tighter, given in its own (swapped) order
        assert loop.safety.limits.lower.tolist() == [10.0, 20.0] and loop.safety.limits.upper.tolist() == [300.0, 400.0]
    finally:
        loop.close()
