"""franka-reach-around: the task file, the scripted planner (both modes), the success judge on hand-made
trajectories, and a short recording through imle-record's Recorder on the joint emulator."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.franka.arms import FR3
from trainer.demos.franka_reach import (EVAL_SEED_BASE, MODES, REACH_AROUND, TRAIN_SEEDS, demo_targets, plan_path,
                                        reach, start_for_seed, time_path)
from trainer.evaluate.arm_success import crossing_mode, inside_avoid_box, judge
from trainer.tasks import resolve_task

ROOT = Path(__file__).resolve().parents[1]
G = REACH_AROUND


def test_task_file_loads_with_the_names_the_franka_reports():
    task = resolve_task("franka-reach-around")
    assert task.obs_names == FR3.joint_names
    assert task.action.joints == FR3.joint_names
    assert len(task.action.names) == 7
    low, high = np.array(task.action.low), np.array(task.action.high)
    assert np.all(low > np.array(FR3.lower)) and np.all(high < np.array(FR3.upper))  # it narrows the arm's limits
    for box in (G.goal, G.start_low, G.start_high):  # the task's geometry lies inside the task's action box
        assert np.all(np.array(box) > low) and np.all(np.array(box) < high)
    assert task.success is None  # judged from the joints on the evaluation side (docs/franka.md)


def test_starts_are_seeded_inside_the_start_box_and_eval_seeds_are_unseen():
    a, b = start_for_seed(1234), start_for_seed(1234)
    assert np.array_equal(a, b) and not np.array_equal(a, start_for_seed(1235))
    for s in range(50):
        q = start_for_seed(s)
        assert np.all(q >= np.float32(G.start_low)) and np.all(q <= np.float32(G.start_high))
    assert not inside_avoid_box(np.array([start_for_seed(s) for s in range(200)]), G).any()
    assert EVAL_SEED_BASE >= TRAIN_SEEDS[1]


def test_planner_demonstrates_both_modes_and_never_enters_the_box():
    seen = {m: 0 for m in MODES}
    for seed in range(1000, 1060):
        start = start_for_seed(seed)
        mode, targets = demo_targets(start, seed, 0.1)
        traj = np.vstack([start[None], targets])
        v = judge(traj, G)
        assert v.success and v.entered_step is None, seed
        assert v.mode == mode
        assert np.allclose(targets[-1], G.goal)
        assert np.max(np.abs(np.diff(traj, axis=0))) < 0.2  # no jumps: at most ~0.8 rad/s x 0.1 s plus the start
        seen[mode] += 1
    assert min(seen.values()) >= 15, seen
    # variation: two demos of the same mode from the same start differ
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)
    pa, pb = plan_path(start_for_seed(7), "over", rng_a), plan_path(start_for_seed(7), "over", rng_b)
    assert abs(pa[:, 1].max() - pb[:, 1].max()) > 1e-3  # a different clearance over the box
    with pytest.raises(ValueError, match="mode"):
        plan_path(start_for_seed(7), "sideways", rng_a)


def test_time_path_ends_on_the_goal_and_keeps_the_speed():
    path = np.array([[0.0] * 7, [1.0] + [0.0] * 6])
    t = time_path(path, 0.1, speed=0.5, ease=0.0)
    assert len(t) == 20 and np.allclose(t[-1], path[-1])
    assert np.allclose(np.diff(t[:, 0]), 0.05)


def _line(a, b, n=40):
    return np.linspace(np.asarray(a, float), np.asarray(b, float), n)


def test_judge_on_hand_made_trajectories():
    start = np.array(start_for_seed(3), float)
    goal = np.array(G.goal)
    over = start.copy()
    over[0], over[1] = -0.5, 0.6
    past = over.copy()
    past[0] = 0.5
    q = np.vstack([_line(start, over), _line(over, past), _line(past, goal)])
    v = judge(q, G)
    assert v.success and v.mode == "over" and v.entered_step is None and v.reached_step is not None
    under = q.copy()
    under[:, 1] = np.where(q[:, 1] > 0.35, -0.8, q[:, 1])
    v = judge(under, G)
    assert v.success and v.mode == "under"
    # straight through the box: reaches the goal but entered the box first
    straight = _line(start, goal, 60)
    v = judge(straight, G)
    assert not v.success and v.entered_step is not None and v.reached_step is not None
    assert v.entered_step < v.reached_step
    # stops short of the goal: one joint 0.06 rad off (tolerance 0.05)
    short = q.copy()
    short[:, 6] -= 0.06  # joint 7 approaches the goal from below, so it stays 0.06 short
    v = judge(short, G)
    assert not v.success and v.reached_step is None and v.final_error == pytest.approx(0.06, abs=1e-6)
    # inside the tolerance on every joint: success; entering the box after the goal does not undo it
    later = np.vstack([q, _line(goal, [0.0, 0.0, *goal[2:]], 10)])
    assert judge(later, G).success
    # never crosses the box's middle: mode "none"
    assert crossing_mode(_line(start, over), G) == "none"
    # the box boundary counts as inside
    edge = np.array([[G.avoid_low[0], G.avoid_high[1], 0, 0, 0, 0, 0]], float)
    assert inside_avoid_box(edge, G).all()


@pytest.mark.parametrize("bad", [np.zeros((0, 7)), np.zeros((5, 6)), np.zeros(7),
                                 np.full((3, 7), np.nan), np.full((3, 7), np.inf)])
def test_judge_refuses_malformed_positions(bad):
    with pytest.raises(ValueError, match="positions"):
        judge(bad, G)


def test_scripted_source_streams_targets_then_says_done():
    from runtime.record.sources import Observation
    task = resolve_task("franka-reach-around")
    act = reach(task, 1001)
    start = start_for_seed(1001)
    names = task.state.names
    first = act(Observation(0, 0.0, names, start))
    assert first.shape == (7,) and first.dtype == np.float32
    _, targets = demo_targets(start, 1001, task.period_s)
    assert np.array_equal(first, targets[0].astype(np.float32))
    at_goal = np.asarray(G.goal, np.float32)
    out = [act(Observation(k, k * 0.1, names, at_goal)) for k in range(len(targets), len(targets) + 10)]
    assert out[-1] is None  # at the goal: done after a few settling ticks


def test_record_through_the_recorder_on_the_joint_emulator(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import arm_task
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from trainer.data.replay_buffer import open_buffer
    out = tmp_path / "demos.zarr"
    report = arm_task.record(str(out), episodes=4, seed=1000)
    assert report["episodes"] == 4 and report["clipped"] == 0 and report["rate_limited"] == 0
    assert sum(report["modes"].values()) == 4
    root, ends = open_buffer(out)
    ends = np.asarray(ends)
    seeds = np.asarray(root["meta"]["episode_seeds"])
    states = np.asarray(root["data"]["state"])
    starts = np.concatenate([[0], ends[:-1]])
    for s0, seed in zip(starts, seeds):
        assert np.allclose(states[s0], start_for_seed(int(seed)), atol=1e-6)  # the episode began at its start
    for s0, e in zip(starts, ends):
        assert judge(states[s0:e], G).success


class _FakeSimRobot:
    """Just enough of a SimulatedRobot: records the resets it is asked for."""

    def __init__(self):
        self.resets = []
        self.other = "delegated"

    def reset_plant(self, seed, initial_state=None, timeout=1.0, retries=3):
        self.resets.append((seed, None if initial_state is None else np.asarray(initial_state)))
        return "state"


def test_starts_robot_resets_each_seed_to_its_start_and_delegates_the_rest():
    from trainer.evaluate.arm import StartsRobot
    inner = _FakeSimRobot()
    robot = StartsRobot(inner, start_for_seed)
    assert robot.reset_plant(900_003, timeout=0.5) == "state"
    assert inner.resets[0][0] == 900_003 and np.array_equal(inner.resets[0][1], start_for_seed(900_003))
    explicit = np.zeros(7, np.float32)
    robot.reset_plant(5, explicit)
    assert np.array_equal(inner.resets[1][1], explicit)  # an explicit start wins
    assert robot.other == "delegated"


def test_summary_counts_successes_modes_and_box_entries():
    from runtime.stats import Counters, RunStats
    from trainer.evaluate.arm import summarise
    from trainer.evaluate.arm_success import ReachVerdict
    vs = [ReachVerdict(True, 40, None, "over", 0.01), ReachVerdict(True, 50, None, "under", 0.01),
          ReachVerdict(True, 45, None, "over", 0.02), ReachVerdict(False, 60, 20, "none", 0.0),
          ReachVerdict(False, None, None, "over", 0.4)]
    c = Counters()
    c.rate_limited = 7
    s = summarise(vs, c, RunStats())
    assert s["success_rate"] == pytest.approx(0.6) and s["successes"] == 3
    assert s["mode_share"]["over"] == pytest.approx(2 / 3) and s["mode_share"]["under"] == pytest.approx(1 / 3)
    assert s["entered_avoid_box"] == 1 and s["never_reached"] == 1 and s["median_steps_to_goal"] == 45
    assert s["rate_limited"] == 7 and s["stop_reason"] == ""


def test_eval_cli_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    from trainer.evaluate.arm import main
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a model package" in err[0]
    assert main([str(tmp_path), "--episodes", "0"]) == 2
    assert "--episodes" in capsys.readouterr().err
