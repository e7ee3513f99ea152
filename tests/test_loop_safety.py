"""The loop at the robot boundary (issue #16), with in-process fake robots: bad States, device e-stop and
faults, refused commands, e-stop confirmation, errors inside a run, bounded periods, exit codes."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from firmware_bridge.protocol import Fault, State
from runtime.loop import FaultInjection, LoopConfig, LoopError
from runtime.robot_config import load_robot_config
from runtime.stats import summary_table

from test_loop import ControlLoop, FakePolicy, FakeRobot, run_episodes  # noqa: E402  (tests/ is on sys.path)

ESTOP, FAULT = 0x1, 0x4
IMPLAUSIBLE, BAD_COMMAND, WATCHDOG = 11, 6, 1


class BoundaryRobot(FakeRobot):
    """FakeRobot whose States, flags, Faults and e-stop replies a test scripts.

    state_fn(n, state) -> State: rewrites the n-th State handed out (n counts from 0 over the run);
    faults_fn(n) -> list[Fault]: Faults to report after the n-th command; estop_replies: what
    estop(True) returns, one per call (then True)."""

    def __init__(self, lockstep: bool = True, **kw) -> None:
        super().__init__(lockstep=lockstep, **kw)
        self.n_states = 0
        self.state_fn = None
        self.faults_fn = None
        self.pending: list = []
        self.flags = 0
        self.estop_replies: list = []
        self.estop_calls: list[bool] = []
        self.reset_error_at: int | None = None
        self.resets = 0

    def _state(self) -> State:
        st = State(0, self.pos, [300.0, 300.0, 1.0, self.coverage], flags=self.flags, rx_time=time.monotonic())
        if self.state_fn is not None:
            st = self.state_fn(self.n_states, st) or st
        self.n_states += 1
        return st

    def send_command(self, targets, valid=True):
        seq = super().send_command(targets, valid)
        if self.faults_fn is not None:
            self.pending.extend(self.faults_fn(len(self.sent) - 1))
        return seq

    def take_faults(self):
        out, self.pending = self.pending, []
        return out

    def reset_plant(self, seed, timeout=1.0):
        self.resets += 1
        if self.reset_error_at is not None and self.resets > self.reset_error_at:
            from firmware_bridge.robot import LinkError
            raise LinkError("/dev/ttyACM0 vanished (device unplugged)")
        return super().reset_plant(seed, timeout)

    def estop(self, engage=True):
        self.estop_calls.append(bool(engage))
        self.estops += 1
        if engage:
            ok = self.estop_replies.pop(0) if self.estop_replies else True
            if ok:
                self.flags |= ESTOP
            return ok
        self.flags &= ~ESTOP
        return True


def lockstep(**kw) -> LoopConfig:
    base = dict(lockstep=True, max_steps=20, estop_confirm_s=0.5, estop_retry_s=0.0)
    base.update(kw)
    return LoopConfig(**base)


def run(robot, config, policy=None):
    return run_episodes(policy or FakePolicy(0), robot, config)


# ----------------------------------------------------------------------------- bad States
def _bad(kind):
    def fn(n, st):
        if n < 3:
            return st
        if kind == "joints":
            return State(0, st.positions[:1], st.extras, flags=st.flags, rx_time=st.rx_time)
        if kind == "extras":
            return State(0, st.positions, [], flags=st.flags, rx_time=st.rx_time)
        if kind == "nan":
            return State(0, st.positions, [np.nan, 300.0, 1.0, 0.0], flags=st.flags, rx_time=st.rx_time)
        if kind == "huge":
            return State(0, [1e30, 100.0], st.extras, flags=st.flags, rx_time=st.rx_time)
        raise AssertionError(kind)
    return fn


@pytest.mark.parametrize("kind, text", [("joints", "1 joint positions, the device declared 2"),
                                        ("extras", "0 extras, the device declared 4"),
                                        ("nan", "extra block_x is nan"),
                                        ("huge", "agent_x = 1e+30 is outside the device limits")])
def test_bad_states_hold_then_stop_and_never_become_observations(kind, text):
    robot, policy = BoundaryRobot(), FakePolicy(0)
    robot.state_fn = _bad(kind)
    stats = run(robot, lockstep(max_bad_states=5), policy)
    c = stats.counters
    assert c.bad_states == 5 and stats.states["by_reason"]
    assert "5 bad States in a row" in stats.stop_reason and text in stats.stop_reason
    assert stats.exit_code() == 4 and stats.estop["requested"] and stats.estop["confirmed"]
    # every State the policy saw was a good one (3 of them); the holds repeated the last command
    assert all(o.shape == (5,) and np.all(np.abs(o) < 1e4) for o in policy.observed)
    holds = [r for r in stats.step_log.rows if r.source == "bad-state"]
    assert len(holds) == 4  # the fifth bad State stops the run before anything is sent
    last_good = robot.sent[2][1]
    assert all(np.array_equal(t, last_good) for _, t in robot.sent[3:])
    assert "\n" not in stats.stop_reason


def test_occasional_bad_states_are_counted_and_the_run_completes_with_exit_3():
    robot = BoundaryRobot()
    robot.state_fn = lambda n, st: State(0, [np.inf, 1.0], st.extras, rx_time=st.rx_time) if n % 4 == 2 else st
    stats = run(robot, lockstep(max_steps=20))
    assert stats.counters.bad_states >= 4 and not stats.stop_reason
    assert stats.exit_code() == 3 and stats.summary()["outcome"] == "completed with device faults"
    assert all(np.all(np.isfinite(t)) for _, t in robot.sent)


def test_bad_state_at_episode_start_with_nothing_to_hold_stops():
    robot = BoundaryRobot()
    robot.state_fn = lambda n, st: State(0, [np.nan, 1.0], st.extras, rx_time=st.rx_time)
    stats = run(robot, lockstep())
    assert not robot.sent and "nothing to hold" in stats.stop_reason and stats.exit_code() == 4


def test_realtime_bad_states_hold_and_stop():
    robot = BoundaryRobot(lockstep=False)
    robot.state_fn = _bad("huge")
    stats = run(robot, LoopConfig(period_s=0.01, max_steps=200, end_on_success=False, max_bad_states=3,
                                  estop_confirm_s=0.5, estop_retry_s=0.0))
    assert "3 bad States in a row" in stats.stop_reason and stats.exit_code() == 4
    assert all(np.all(t <= 512) for _, t in robot.sent)


# ----------------------------------------------------------------------------- device reports
def test_device_estop_flag_stops_the_run():
    robot = BoundaryRobot()
    robot.state_fn = lambda n, st: State(0, st.positions, st.extras, flags=ESTOP, rx_time=st.rx_time) if n >= 6 else st
    stats = run(robot, lockstep(episodes=3))
    assert "e-stop is engaged (State flag ESTOP)" in stats.stop_reason
    assert len(robot.sent) == 5 and len(stats.episodes) == 1 and stats.exit_code() == 4
    assert stats.device["flag_states"]["ESTOP"] >= 1


@pytest.mark.parametrize("code, name", [(IMPLAUSIBLE, "IMPLAUSIBLE"), (BAD_COMMAND, "BAD_COMMAND")])
def test_refused_command_stops_by_default(code, name):
    robot = BoundaryRobot()
    robot.faults_fn = lambda n: [Fault(code, "target jumps 300 px; refused")] if n == 4 else []
    stats = run(robot, lockstep())
    assert stats.counters.refused_commands == 1 and stats.device["faults"] == {name: 1}
    assert stats.stop_reason.startswith(f"device fault {name}: target jumps")
    assert stats.exit_code() == 4 and len(robot.sent) == 5 and robot.estop_calls == [True]


def test_device_refusing_every_command_never_looks_normal():
    robot = BoundaryRobot()
    robot.faults_fn = lambda n: [Fault(BAD_COMMAND, "refused")]  # 40 of 40 commands refused
    stats = run(robot, lockstep(max_steps=40, on_device_fault="hold"))
    s = stats.summary()
    assert stats.counters.refused_commands == len(robot.sent) == 40
    assert stats.counters.fault_holds == 39 and stats.exit_code() == 3  # the first command was the policy's
    table = summary_table(s)
    assert "refused commands 40" in table and "BAD_COMMAND 40" in table and "exit 3" in table
    # holding means: hold where the robot is (never the policy's refused target)
    rows = [r for r in stats.step_log.rows if r.source == "fault-hold"]
    assert len(rows) == 39 and all(np.allclose(r.command, r.positions) for r in rows)


def test_info_faults_are_counted_but_do_not_stop():
    robot = BoundaryRobot()
    robot.faults_fn = lambda n: [Fault(WATCHDOG, "no command for 301 ms")] if n == 3 else []
    stats = run(robot, lockstep())
    assert not stats.stop_reason and stats.device["faults"] == {"WATCHDOG": 1} and stats.exit_code() == 3


def test_fault_flag_set_on_three_states_in_a_row_is_a_device_fault():
    robot = BoundaryRobot()
    robot.state_fn = lambda n, st: State(0, st.positions, st.extras, flags=FAULT, rx_time=st.rx_time) if n >= 5 else st
    stats = run(robot, lockstep())
    assert "FAULT flag stayed set on 3 States in a row" in stats.stop_reason and stats.exit_code() == 4
    robot = BoundaryRobot()  # once, as after a watchdog trip: counted, not a fault
    robot.state_fn = lambda n, st: State(0, st.positions, st.extras, flags=FAULT, rx_time=st.rx_time) if n == 5 else st
    stats = run(robot, lockstep())
    assert not stats.stop_reason and stats.device["flag_states"] == {"FAULT": 1} and stats.exit_code() == 0


# ----------------------------------------------------------------------------- e-stop
def test_estop_is_retried_until_the_device_confirms():
    robot = BoundaryRobot()
    robot.estop_replies = [False, False, True]
    robot.state_fn = _bad("nan")
    stats = run(robot, lockstep(max_bad_states=1))
    assert stats.estop["confirmed"] and stats.estop["attempts"] == 3 and stats.exit_code() == 4
    assert "e-stop engaged (confirmed by the device)" in summary_table(stats.summary())


def test_unconfirmed_estop_is_exit_5_and_never_called_engaged():
    robot = BoundaryRobot()
    robot.estop_replies = [False] * 10_000
    robot.state_fn = _bad("nan")
    stats = run(robot, lockstep(max_bad_states=1, estop_confirm_s=0.05, estop_retry_s=0.001))
    assert not stats.estop["confirmed"] and stats.estop["attempts"] >= 1 and stats.exit_code() == 5
    table = summary_table(stats.summary())
    assert "E-STOP NOT CONFIRMED" in table and "e-stop engaged" not in table


def test_estop_flag_in_a_fresh_state_confirms_when_the_ack_is_lost():
    robot = BoundaryRobot()
    robot.state_fn = _bad("nan")

    def estop(engage=True):  # the Ack never arrives, but the device's States show the e-stop
        robot.estop_calls.append(engage)
        robot.flags |= ESTOP
        return False
    robot.estop = estop
    stats = run(robot, lockstep(max_bad_states=1))
    assert stats.estop["confirmed"] and stats.exit_code() == 4


def test_device_estopped_at_start_is_not_driven_without_release():
    robot = BoundaryRobot()
    robot.flags = ESTOP
    stats = run(robot, lockstep())
    assert not robot.sent and "--release-estop" in stats.stop_reason and stats.exit_code() == 4
    assert robot.estop_calls == []
    robot = BoundaryRobot()
    robot.flags = ESTOP
    stats = run(robot, lockstep(release_estop=True))
    assert robot.estop_calls[0] is False and len(robot.sent) == 20 and stats.exit_code() == 0
    assert stats.settings["estop_released_at_start"]


def test_release_that_the_device_does_not_confirm_refuses_to_start():
    robot = BoundaryRobot()
    robot.flags = ESTOP
    robot.estop = lambda engage=True: False
    stats = run(robot, lockstep(release_estop=True, estop_confirm_s=0.05, estop_retry_s=0.001))
    assert not robot.sent and "did not confirm the e-stop release" in stats.stop_reason and stats.exit_code() == 4


# ----------------------------------------------------------------------------- errors inside a run
def test_exception_mid_run_stops_estops_and_keeps_the_statistics():
    robot = BoundaryRobot()
    robot.reset_error_at = 1  # unplugged before the second episode
    stats = run(robot, lockstep(episodes=3, max_steps=10))
    assert stats.error.startswith("LinkError: /dev/ttyACM0 vanished")
    assert "error inside the run" in stats.stop_reason and stats.exit_code() == 4
    assert robot.estop_calls == [True] and [e.steps for e in stats.episodes] == [10, 0]
    assert stats.episodes[1].aborted.startswith("error inside the run")
    json.dumps(stats.summary(), default=str)  # the summary is complete


def test_policy_that_raises_outside_planning_is_an_error_not_a_traceback():
    class Exploding(FakePolicy):
        def reset(self, seed=None):
            raise RuntimeError("boom\nsecond line")

    robot = BoundaryRobot()
    stats = run(robot, lockstep(), Exploding(0))
    assert stats.error == "RuntimeError: boom second line" and stats.exit_code() == 4


# ----------------------------------------------------------------------------- periods and waits
@pytest.mark.parametrize("period", [float("inf"), float("nan"), 1e6, -1.0, 0.0])
def test_period_out_of_range_is_a_one_line_loop_error(period):
    with pytest.raises(LoopError, match="--period must be between"):
        ControlLoop(FakePolicy(0), FakeRobot(), LoopConfig(period_s=period))
    with pytest.raises(LoopError, match="the package's control.period_s must be between"):
        ControlLoop(FakePolicy(0, period=period), FakeRobot(), LoopConfig())


def test_estop_request_is_seen_within_a_slice_of_a_long_period():
    robot, policy = FakeRobot(), FakePolicy(0)
    loop = ControlLoop(policy, robot, LoopConfig(period_s=10.0, max_steps=5, end_on_success=False))
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while policy.calls < 2 and time.monotonic() < deadline:  # warmed up: now waiting 10 s for tick 0
            time.sleep(0.01)
        loop.request_estop()  # the wait is cut into slices and sees it
        t.join(timeout=5.0)
        assert not t.is_alive(), "the loop slept through an e-stop request"
    finally:
        loop.close()
    assert loop.stats.interrupted and loop.stats.estop["confirmed"] and loop.stats.exit_code() == 130


# ----------------------------------------------------------------------------- limits in the loop
def test_robot_config_limits_and_steps_reach_the_commands(tmp_path):
    p = tmp_path / "robot.toml"
    p.write_text("[loop]\nmax_bad_states = 2\non_device_fault = \"hold\"\n"
                 "[joints.agent_x]\nupper = 150.0\nmax_step = 2.0\n")
    robot = BoundaryRobot()
    stats = run(robot, lockstep(robot_config=load_robot_config(p)))
    sent = np.array([t for _, t in robot.sent])
    start = np.array([100.0, 50.0])  # the plant's reset position for seed 0
    assert np.all(sent[:, 0] <= 150.0) and np.all(np.abs(np.diff(sent[:, 0])) <= 2.0 + 1e-4)
    assert abs(sent[0, 0] - start[0]) <= 2.0 + 1e-4
    lim = stats.limits
    assert lim["joints"]["agent_x"]["upper"] == 150.0 and lim["joints"]["agent_x"]["max_step"] == 2.0
    assert lim["joints"]["agent_x"]["sources"]["max_step"] == "robot config max_step"
    assert lim["on_device_fault"] == "hold" and lim["max_bad_states"] == 2
    assert lim["robot_config"]["source"] == str(p)


def test_package_widening_is_noted_and_has_no_effect():
    policy = FakePolicy(0)
    policy.manifest.action.low, policy.manifest.action.high = [-1e9, -1e9], [1e9, 1e9]
    loop = ControlLoop(policy, FakeRobot(lockstep=True), lockstep())
    try:
        assert loop.safety.limits.lower.tolist() == [0.0, 0.0] and loop.safety.limits.upper.tolist() == [512.0, 512.0]
        assert len(loop.stats.limits["notes"]) == 2
    finally:
        loop.close()
    policy.manifest.action.low = [float("nan"), 0.0]
    with pytest.raises(LoopError, match="must be finite"):
        ControlLoop(policy, FakeRobot(lockstep=True), lockstep())


def test_robot_config_with_an_unknown_joint_is_a_loop_error(tmp_path):
    p = tmp_path / "robot.toml"
    p.write_text("[joints.elbow]\nupper = 1.0\n")
    with pytest.raises(LoopError, match="'elbow' is not a joint of this robot"):
        ControlLoop(FakePolicy(0), FakeRobot(lockstep=True), lockstep(robot_config=load_robot_config(p)))


def test_injected_jump_leaves_the_filter_only_for_the_chosen_steps():
    robot = BoundaryRobot(lockstep=False)
    stats = run(robot, LoopConfig(period_s=0.01, max_steps=12, end_on_success=False,
                                  faults=FaultInjection(jump_at_step=5, jump_px=300.0, jump_count=2)))
    rows = {r.step: r for r in stats.step_log.rows}
    sent = [t for _, t in robot.sent]
    jumped = [i for i, (r, t) in enumerate(zip(stats.step_log.rows, sent)) if not np.allclose(r.command, t)]
    assert jumped == [5, 6] and stats.settings["injected_jumps"] == 2
    assert all(np.all(t >= 0) and np.all(t <= 512) for t in sent)
    assert rows[4].command is not None


# ----------------------------------------------------------------------------- a degraded link
def _link_run(seq_gaps: int, corrupt: int, frames_ok: int, budget: float = 0.05):
    from runtime.stats import RunStats

    stats = RunStats(link_error_budget=budget)
    stats.link = {"frames_ok": frames_ok, "seq_gaps": seq_gaps, "corrupt": {"crc": corrupt} if corrupt else {}}
    return stats


def test_a_link_that_lost_more_frames_than_the_budget_is_exit_3_and_flagged():
    clean = _link_run(seq_gaps=2, corrupt=1, frames_ok=997)  # 0.3%: a loaded host's odd overflow
    assert clean.exit_code() == 0 and not clean.summary()["link_errors"]["degraded"]
    bad = _link_run(seq_gaps=250, corrupt=50, frames_ok=700)
    s = bad.summary()
    assert bad.exit_code() == 3 and s["link_errors"] == {"lost": 300, "frames": 1000, "fraction": 0.3,
                                                         "budget": 0.05, "degraded": True}
    assert "link DEGRADED: 300 of 1000 frames from the device lost or corrupt (30.0% > --link-error-budget 5%)" \
        in summary_table(s)
    assert _link_run(seq_gaps=250, corrupt=50, frames_ok=700, budget=0.5).exit_code() == 0
    assert _link_run(0, 0, 0).summary()["link_errors"]["fraction"] == 0.0  # a link that counts nothing (Franka)


@pytest.mark.parametrize("budget", [float("nan"), -0.1, 1.5, True, "0.1"])
def test_a_bad_link_error_budget_is_a_one_line_loop_error(budget):
    with pytest.raises(LoopError, match=r"^link error budget must be a fraction in \[0, 1\], got "):
        ControlLoop(FakePolicy(0), FakeRobot(), LoopConfig(link_error_budget=budget))
