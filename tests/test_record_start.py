"""imle-record's move to start (runtime.record.start): before each episode the robot is driven to the episode's
start pose through the Robot interface, slowly and inside its limits, and nothing of the move is recorded."""
import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("serial")

from runtime import robots  # noqa: E402
from runtime.record.buffer import ReplayBufferWriter  # noqa: E402
from runtime.record.cli import main  # noqa: E402
from runtime.record.session import RecordConfig, Recorder  # noqa: E402
from runtime.record.sources import ScriptedSource  # noqa: E402
from runtime.record.start import MoveToStartConfig, StartError, plan_move, start_pose  # noqa: E402
from runtime.task_spec import TaskSpec  # noqa: E402
from tests.test_record_cli import DEMOS, TASK  # noqa: E402
from trainer.data import load_replay_buffer  # noqa: E402

START_FUNCTIONS = """
import math, os, signal

def start(task, seed):
    return [0.1 * (seed % 5) - 0.2, -0.6, 0.7]

def outside(task, seed):
    return [0.0, 1.5, 0.0]

def short(task, seed):
    return [0.0, 0.0]

def nan(task, seed):
    return [0.0, math.nan, 0.0]

def text(task, seed):
    return "left"

def raises(task, seed):
    raise RuntimeError("no start\\nfor you")

def interrupt_third(task, seed):
    if seed == 2:  # Ctrl-C arrives as the third episode's move is about to begin
        os.kill(os.getpid(), signal.SIGINT)
    return start(task, seed)
"""


@pytest.fixture
def task_file(tmp_path):
    p = tmp_path / "reach3.toml"
    p.write_text(TASK)
    return p


@pytest.fixture
def starts(tmp_path):
    p = tmp_path / "starts.py"
    p.write_text(START_FUNCTIONS)
    return p


class Logged:
    """The emulator, with every command it is given logged; `stuck=True`: it never moves (a robot whose
    brakes are on, a stand-in for an arm that does not follow)."""

    def __init__(self, robot, stuck=False):
        self._robot, self.stuck, self.commands = robot, stuck, []
        self._hold = None

    def step(self, targets, timeout=1.0):
        self.commands.append(np.array(targets, np.float64))
        if self.stuck:
            if self._hold is None:
                self._hold = np.array(self._robot.latest_state().positions, np.float32)
            return self._robot.step(self._hold, timeout=timeout)
        return self._robot.step(targets, timeout=timeout)

    def __getattr__(self, name):
        return getattr(self._robot, name)


def recorder(task_file, stuck=False, **move):
    task = TaskSpec.from_toml(task_file)
    handle = robots.make_robot("emulator-lockstep", period_s=task.period_s, package=str(task_file))
    robot = Logged(handle.robot, stuck)
    rec = Recorder(robot, handle.capabilities, task,
                   RecordConfig(task.period_s, 100, lockstep=True, move=MoveToStartConfig(**move)))
    return handle, robot, rec, task


def test_the_move_reaches_the_start_slowly_inside_the_limits_and_is_not_recorded(task_file):
    handle, robot, rec, task = recorder(task_file, speed=0.5, tolerance=0.01)
    source = ScriptedSource.load(f"{DEMOS}:reach")
    try:
        start = np.array([0.3, -0.6, 0.7])
        res = rec.record_episode(source, 0, 4, start)
    finally:
        handle.close()
    assert res.complete and res.move is not None and res.move.reached
    assert res.move.error <= 0.01 and res.move.ticks == len(robot.commands) - res.steps
    moves = np.array(robot.commands[:res.move.ticks])
    assert len(moves) >= 10  # from the plant's seeded reset pose, not a jump
    # every command of the move inside the box, no step larger than speed x period
    assert np.all(moves >= rec.limits.lower) and np.all(moves <= rec.limits.upper)
    steps = np.abs(np.diff(np.vstack([moves[:1], moves]), axis=0))
    assert steps.max() <= 0.5 * task.period_s + 1e-6
    assert np.max(np.abs(moves[-1] - start)) <= 0.05  # the ramp may end early: the arm is there within tolerance
    # the recording starts at the start pose: the first stored state is there, and the move is not in the buffer
    state = res.data[task.state.key]
    assert len(state) == res.steps == 20
    assert np.max(np.abs(state[0] - start)) <= 0.01


def test_a_start_pose_outside_the_robots_limits_is_refused_before_anything_moves(task_file):
    handle, robot, rec, _ = recorder(task_file)
    try:
        with pytest.raises(StartError) as err:
            rec.record_episode(ScriptedSource.load(f"{DEMOS}:reach"), 0, 0, np.array([0.0, 1.5, 0.0]))
    finally:
        handle.close()
    assert str(err.value) == "start pose j2 = 1.5 is outside the robot's limits [-1, 1]"
    assert robot.commands == []


def test_a_robot_that_does_not_move_aborts_the_move_in_one_line(task_file):
    handle, robot, rec, _ = recorder(task_file, stuck=True, speed=0.5, tolerance=0.01, timeout_s=1.0)
    try:
        res = rec.record_episode(ScriptedSource.load(f"{DEMOS}:reach"), 0, 0, np.array([0.8, -0.8, 0.8]))
    finally:
        handle.close()
    assert not res.complete and res.steps == 0 and not res.move.reached
    line = res.ended
    assert line.startswith("move to start: the robot did not reach the start pose within ") and "\n" not in line
    hold = robot._hold.astype(np.float64)
    worst = int(np.argmax(np.abs(hold - [0.8, -0.8, 0.8])))
    assert (f"j{worst + 1} is at {hold[worst]:.4f}, start {[0.8, -0.8, 0.8][worst]:.4f}" in line
            and line.endswith("; tolerance 0.01)")), line
    # it gave up after the ramp plus the timeout (1 s = 20 commands at 0.05 s), then one hold command
    ramp = len(plan_move(hold, np.array([0.8, -0.8, 0.8]), 0.05, 0.5, rec.limits.max_step))
    assert len(robot.commands) == ramp + 20 + 1


def test_an_operator_stop_during_the_move_aborts_it(task_file):
    handle, robot, rec, _ = recorder(task_file, speed=0.2)
    real_step = robot.step

    def step(targets, timeout=1.0):
        if len(robot.commands) == 3:
            rec.request_stop()
        return real_step(targets, timeout)
    robot.step = step
    try:
        res = rec.record_episode(ScriptedSource.load(f"{DEMOS}:reach"), 0, 0, np.array([0.5, 0.5, 0.5]))
    finally:
        handle.close()
    assert res.ended == "stopped by the operator" and not res.complete and res.steps == 0


def record(task_file, out, starts, function, *extra):
    return main(["--task", str(task_file), "--out", str(out), "--robot", "emulator-lockstep",
                 "--source", f"scripted:{DEMOS}:reach", "--review", "auto", "--start", f"{starts}:{function}",
                 *extra])


def test_imle_record_start_records_every_episode_from_its_start(tmp_path, task_file, starts, capsys):
    out = tmp_path / "demos.zarr"
    assert record(task_file, out, starts, "start", "--episodes", "3", "--start-speed", "0.4") == 0
    printed = capsys.readouterr().out
    assert printed.count("moved to start in ") == 3
    rb = load_replay_buffer(out)
    assert rb.episode_ends.tolist() == [20, 40, 60]
    for i in range(3):
        first = rb.data["state"][20 * i]
        np.testing.assert_allclose(first, [0.1 * i - 0.2, -0.6, 0.7], atol=0.01)


def test_an_interrupted_recording_during_a_move_leaves_the_buffer_valid(tmp_path, task_file, starts, capsys):
    out = tmp_path / "demos.zarr"
    assert record(task_file, out, starts, "interrupt_third", "--episodes", "5") == 130
    err = capsys.readouterr().err
    assert "e-stop engaged (confirmed); the episode in progress was not stored" in err and "Traceback" not in err
    assert load_replay_buffer(out).episode_ends.tolist() == [20, 40]
    with ReplayBufferWriter(out) as w:
        assert w.seeds().tolist() == [0, 1]
    # the next session appends after them
    assert record(task_file, out, starts, "start", "--episodes", "1", "--seed", "7") == 0
    assert load_replay_buffer(out).episode_ends.tolist() == [20, 40, 60]


@pytest.mark.parametrize("function, extra, err", [
    ("outside", [], "start pose j2 = 1.5 is outside the robot's limits [-1, 1]"),
    ("short", [], "the start function returned 2 values for seed 0; the task's action has 3"),
    ("nan", [], "the start function returned a non-finite value (nan) at index 1 for seed 0"),
    ("text", [], "the start function returned 'left' for seed 0; expected 3 numbers"),
    ("raises", [], "the start function failed for seed 0: RuntimeError: no start for you"),
    ("nosuch", [], "has no function 'nosuch'"),
    ("start", ["--start-speed", "nan"], "--start-speed must be a finite number > 0, got nan"),
    ("start", ["--start-tolerance", "0"], "--start-tolerance must be a finite number > 0, got 0.0"),
    ("start", ["--start-timeout", "-1"], "--start-timeout must be a finite number > 0, got -1.0"),
])
def test_bad_starts_are_one_line_errors_and_store_nothing(tmp_path, task_file, starts, capsys, function, extra, err):
    out = tmp_path / "demos.zarr"
    assert record(task_file, out, starts, function, "--episodes", "2", *extra) == 2
    e = capsys.readouterr().err
    assert err in e and "Traceback" not in e
    assert all(len(line) < 400 for line in e.strip().splitlines())
    if out.exists():
        with ReplayBufferWriter(out) as w:
            assert w.n_episodes == 0


def test_a_bad_start_reference_is_refused_before_any_robot(tmp_path, task_file, capsys):
    assert main(["--task", str(task_file), "--out", str(tmp_path / "d.zarr"), "--robot", "emulator-lockstep",
                 "--source", f"scripted:{DEMOS}:reach", "--start", "nomodule_xyz"]) == 2
    assert "--start takes MODULE:FUNCTION, got nomodule_xyz" in capsys.readouterr().err


def test_start_pose_checks_what_the_function_returns():
    assert start_pose(lambda t, s: (1, 2, 3), None, 0, 3).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(StartError, match="returned 4 values for seed 9"):
        start_pose(lambda t, s: np.zeros((2, 2)), None, 9, 3)
    with pytest.raises(StartError, match="non-finite value"):
        start_pose(lambda t, s: [np.inf, 0, 0], None, 0, 3)
    with pytest.raises(StartError, match="expected 3 numbers"):
        start_pose(lambda t, s: {"a": 1}, None, 0, 3)


def test_the_ramp_keeps_every_joint_inside_its_step_and_ends_on_the_start():
    cur, goal = np.array([0.0, 0.0, 0.0]), np.array([1.0, -0.2, 0.0])
    max_step = np.array([0.5, 0.01, 0.5])
    path = plan_move(cur, goal, 0.1, 0.3, max_step)
    steps = np.abs(np.diff(np.vstack([cur, path]), axis=0))
    assert np.all(steps <= np.minimum(0.3 * 0.1, 0.9 * max_step) + 1e-9)
    assert path[-1].tolist() == goal.tolist()
    # joints arrive together (one time law): joint 2's path is the same fraction as joint 1's at every row
    np.testing.assert_allclose(path[:, 1] / -0.2, path[:, 0], atol=1e-12)
    assert plan_move(goal, goal, 0.1, 0.3, max_step).tolist() == [goal.tolist()]


class Flaky:
    """A real-time robot stand-in whose link is unhealthy for the first `bad` looks, then fresh again."""

    def __init__(self, bad):
        self.bad, self.looks = bad, 0

    @property
    def healthy(self):
        self.looks += 1
        return self.looks > self.bad

    def latest_state(self):
        import time
        from types import SimpleNamespace
        return SimpleNamespace(rx_time=time.monotonic(), positions=np.zeros(3))


@pytest.mark.parametrize("bad, fresh", [(3, True), (10 ** 9, False)])
def test_a_tick_without_a_fresh_state_waits_within_the_grace_then_gives_up(task_file, bad, fresh):
    from runtime.safety import LinkWatch
    handle, _, rec, _ = recorder(task_file)
    handle.close()
    rec.robot = Flaky(bad)
    rec.config.link_grace_s = 0.05
    got = rec._wait_fresh(LinkWatch(0.3))
    assert (got is not None) == fresh
    assert rec.robot.looks >= (4 if fresh else 2)
