"""The fixed-period control loop: ticks on absolute deadlines, planning off the tick path.

Real-time mode: tick k starts at ``t0 + k * period`` on the monotonic clock (never ``sleep(period)``,
so there is no drift). The loop sleeps most of the way to the deadline and spin-waits the last
``spin_s``. Each tick reads the robot's latest State into the observation history, sends the action
scheduled for this tick (or holds), and records timing. Every Ta ticks a plan is requested from the
observation of the tick it starts at, early enough (``lead`` ticks, from measured latency) that it is
ready for its handover tick; it runs on the planner thread (runtime.schedule.Planner). A tick never
waits for a plan. A host stall longer than a period skips the missed ticks (counted) rather than
sending a burst of late commands.

Lock-step mode (the emulator's lockstep plant): no wall clock. Each step plans synchronously when
due, sends one command and waits for the State it produced, so the commanded actions equal an
in-process evaluation with the same seeds (history of To states padded at episode start by
repeating the first; plan every Ta steps; execute chunk[To-1 : To-1+Ta], runtime.chunks).

The contract is typed: the policy is a :class:`PolicyLike`, the robot a firmware_bridge.robot.Robot
(a simulated plant, flag SIMULATED, also a SimulatedRobot: reset_plant/step), described by its
Capabilities. The task's names are bound to the robot's strictly by name (runtime.binding): what the
policy observes, which joint each action dimension commands, and the task's success signal, whose
value the loop reports as "progress" and which ends an episode with success at its threshold.

    stats = run_episodes(policy, robot, LoopConfig(episodes=5, lockstep=True), robot.connect())
"""
from __future__ import annotations

import enum
import gc
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

from firmware_bridge.protocol import Capabilities, State, StatusFlags
from firmware_bridge.robot import Robot, SimulatedRobot, is_simulated
from runtime.binding import ActionMapper, MappingError, TaskNames, task_names_of
from runtime.chunks import executed_rows
from runtime.device_reports import DeviceReports, Verdict
from runtime.robot_config import (DEFAULT_MAX_BAD_STATES, DEFAULT_STATE_MARGIN, FAULT_POLICIES, RobotConfig,
                                  RobotConfigError)
from runtime.safety import (FilterResult, LinkWatch, SafetyConfigError, SafetyFilter, check_period,
                            effective_limits)
from runtime.schedule import ActionSchedule, Planner, PlanRequest, PlanResult, lead_ticks
from runtime.cameras.monitor import DEFAULT_MAX_REPEAT, DEFAULT_MAX_STALE, FrameMonitor, default_max_age
from runtime.cameras.timed import as_timed_source
from runtime.cameras.stream import paired_frame
from runtime.sensors import FrameSource, ObservationHistory, StateMapper
from runtime.state_check import StateCheck
from runtime.stats import LINK_ERROR_BUDGET, EpisodeStats, RunStats, StepLog, StepRecord

if TYPE_CHECKING:
    from runtime.package import Manifest


@dataclass
class FaultInjection:
    """Host-side faults for the hardware-in-the-loop tests (all off by default)."""
    stall_episode: int = 0
    stall_at_step: Optional[int] = None  # after sending this step's command, the tick thread sleeps...
    stall_s: float = 0.5                 # ...this long (a host hiccup)
    nan_plan: Optional[int] = None       # this plan (0-based over the run) comes back all NaN
    # Real time, episode `stall_episode`: from step `jump_at_step`, `jump_count` commands are sent `jump_px`
    # further than the safety filter allowed (as a corrupted frame would be), so that the device's
    # plausibility check refuses them. Tests of the device -> operator path only.
    jump_at_step: Optional[int] = None
    jump_px: float = 0.0
    jump_count: int = 1


# why lock-step stops when a refused tick comes before any command (there is nothing to hold)
_NOTHING_TO_HOLD = {"bad-state": "bad State with nothing to hold",
                    "camera-hold": "camera: no usable frame and no command to hold"}


@dataclass
class LoopConfig:
    episodes: int = 1
    base_seed: int = 0                    # episode i resets the plant with seed base_seed + i
    max_steps: int = 300                  # commands per episode (Push-T: 300)
    period_s: Optional[float] = None      # None: the package's control.period_s
    lockstep: bool = False
    end_on_success: bool = True           # end an episode when the task's success signal reaches its threshold
    lead_ticks: Optional[int] = None      # ticks between a plan's request and its handover; None: measured
    lead_margin_s: float = 0.002          # added to the worst recent plan latency when choosing the lead
    use_tail: bool = True                 # run the previous plan's tail while a new plan is late
    spin_s: float = 0.0005                # busy-wait this long before each deadline (0: sleep only)
    miss_tolerance: float = 0.2           # a tick later than this fraction of the period is a miss
    stale_timeout_s: float = 0.3          # a State older than this means the link is lost
    link_give_up_s: float = 30.0          # end the episode when the link stays lost this long
    realtime_priority: int = 0            # SCHED_FIFO priority of the tick thread (needs CAP_SYS_NICE); 0: off
    planner_nice: int = 10                # the planning thread's nice value when it is not real-time
    rt_planner: bool = True               # with realtime_priority: the planner runs SCHED_FIFO just below the
                                          # tick thread, so it is never descheduled while holding the GIL
    rt_helper_threads: tuple[str, ...] = ("SerialLink",)  # name prefixes of I/O threads raised likewise
    gc_freeze: bool = True                # freeze setup objects, no GC during an episode, collect between
    switch_interval_s: Optional[float] = 0.0005  # GIL hand-over interval while running (Python's default: 5 ms)
    reset_timeout_s: float = 2.0
    step_timeout_s: float = 2.0           # lock-step: wait for the State of a command
    log_steps: bool = True                # keep the per-step log (CSV)
    seed_policy_per_episode: bool = True  # episode i plans with policy seed base_seed + i (as trainer.evaluate)
    robot_config: Optional[RobotConfig] = None  # the operator's limits and loop settings (runtime.robot_config)
    on_device_fault: Optional[str] = None  # "stop" | "hold"; None: the robot config's, else "stop"
    state_margin: Optional[float] = None   # fraction of a joint's range a State may lie outside; None: config
    max_bad_states: Optional[int] = None   # stop after this many bad States in a row; None: config
    fault_flag_limit: int = 3              # FAULT flag on this many States in a row counts as a device fault
    release_estop: bool = False            # at start, release a latched device e-stop (confirmed) instead of refusing
    estop_confirm_s: float = 2.0           # retry the e-stop this long until the device confirms it
    estop_retry_s: float = 0.05            # pause between e-stop attempts
    first_state_timeout_s: float = 1.0     # at start: wait this long for a State to check the e-stop flag
    wait_slice_s: float = 0.05             # sleeps are cut into slices this long (Ctrl-C is seen within one)
    camera_max_age_s: Optional[float] = None  # a frame older than this holds the tick; None: 2 periods, >= 0.1 s
    camera_max_repeat: int = DEFAULT_MAX_REPEAT  # the same frame used more ticks in a row than this holds
    camera_max_stale: int = DEFAULT_MAX_STALE    # stop the run after this many camera holds in a row
    link_error_budget: float = LINK_ERROR_BUDGET  # more of the device's frames lost than this: exit 3
    obs_map: dict[str, str] = field(default_factory=dict)    # policy observation -> robot name (operator's)
    joint_map: dict[str, str] = field(default_factory=dict)  # task joint -> robot joint (operator's)
    faults: FaultInjection = field(default_factory=FaultInjection)


@dataclass
class LiveStatus:
    """What the status line shows; written by the loop, read by another thread."""
    episode: int = 0
    step: int = 0
    progress: float = math.nan        # the task's success signal (NaN: the task declares none)
    jitter_ms: float = math.nan       # worst jitter over the last second
    plan_ms: float = math.nan         # latest plan latency
    held: int = 0
    dropped: int = 0
    link_ok: bool = True
    done: bool = False


@runtime_checkable
class PolicyLike(Protocol):
    """What the loop uses of a runtime.Policy. plan() returns a chunk [Tp, A] (row To-1 is now);
    reset(seed) starts an episode (with a seed: the random stream of a fresh Policy(seed=seed))."""
    manifest: "Manifest"
    seed: int
    last_plan_info: dict[str, Any]

    @property
    def obs_horizon(self) -> int: ...

    @property
    def pred_horizon(self) -> int: ...

    @property
    def action_horizon(self) -> int: ...

    @property
    def action_dim(self) -> int: ...

    @property
    def state_dim(self) -> int: ...

    def plan(self, obs_state: np.ndarray, obs_image: Optional[np.ndarray] = None) -> np.ndarray: ...

    def reset(self, seed: Optional[int] = None) -> None: ...


@dataclass
class PolicyShape:
    """The parts of a runtime.Policy (and its manifest) the loop relies on."""
    obs_horizon: int
    pred_horizon: int
    action_horizon: int
    action_dim: int
    state_dim: int
    period_s: float
    task: TaskNames
    action_low: Optional[list[float]]
    action_high: Optional[list[float]]
    image_shape: Optional[tuple[int, ...]]  # [3, H, W] per frame

    @property
    def action_names(self) -> list[str]:
        return list(self.task.action_names)

    @classmethod
    def of(cls, policy: PolicyLike, task: Optional[TaskNames] = None) -> "PolicyShape":
        m = policy.manifest
        image = m.obs.image_shape
        task = task if task is not None else task_names_of(m)
        return cls(policy.obs_horizon, policy.pred_horizon, policy.action_horizon, policy.action_dim,
                   policy.state_dim, float(m.control.period_s), task, m.action.low, m.action.high,
                   tuple(image) if image else None)


class LoopError(RuntimeError):
    """The loop cannot run with this policy/robot combination (one-line message)."""


class ControlLoop:
    """Drives one robot with one policy for a number of episodes. Call run() once."""

    def __init__(self, policy: PolicyLike, robot: Robot, config: LoopConfig, capabilities: Capabilities,
                 camera: Optional[FrameSource] = None, task: Optional[TaskNames] = None) -> None:
        """`capabilities`: what the connected robot said it is (robot.connect()). `task`: the names to
        bind (default: the package's task_spec, runtime.binding.task_names_of)."""
        self.policy = policy
        self.robot = robot
        self.config = config
        if not isinstance(capabilities, Capabilities):
            raise LoopError("the robot is not connected (no Capabilities)")
        self.caps = capabilities
        self.simulated = is_simulated(robot, capabilities)
        try:
            self.shape = PolicyShape.of(policy, task)
        except MappingError as exc:
            raise LoopError(str(exc)) from None
        try:
            if config.period_s is not None:
                self.period = check_period(config.period_s, "--period")
            else:
                self.period = check_period(self.shape.period_s, "the package's control.period_s")
        except SafetyConfigError as exc:
            raise LoopError(str(exc)) from None
        sh = self.shape
        t = sh.task
        if len(t.action_names) != sh.action_dim or len(t.obs_names) != sh.state_dim:
            raise LoopError(f"the task names {len(t.obs_names)} observations and {len(t.action_names)} action "
                            f"dimensions; the policy's graphs take {sh.state_dim} and make {sh.action_dim}")
        rc = config.robot_config
        # The operator's mappings: the robot config's tables, overridden entry by entry by the command line.
        obs_map = {**(rc.obs_map if rc is not None else {}), **config.obs_map}
        joint_map = {**(rc.joint_map if rc is not None else {}), **config.joint_map}
        try:
            self.mapper = StateMapper(t.obs_names, self.caps.joint_names, self.caps.extra_names, obs_map,
                                      t.success_signal if t.success_threshold is not None else None)
            self.actions = ActionMapper(t.action_joints, self.caps.joint_names, joint_map)
        except MappingError as exc:
            raise LoopError(str(exc)) from None
        low, high = _narrowed(sh.action_low, t.action_low, max), _narrowed(sh.action_high, t.action_high, min)
        try:
            limits = effective_limits(self.caps, self.period, rc,
                                      {"low": self.actions.limits_to_robot(low),
                                       "high": self.actions.limits_to_robot(high)})
        except (SafetyConfigError, RobotConfigError) as exc:
            raise LoopError(str(exc)) from None
        self.safety = SafetyFilter(limits)
        self.fault_policy = config.on_device_fault or (rc.on_device_fault if rc is not None else None) or "stop"
        if self.fault_policy not in FAULT_POLICIES:
            raise LoopError(f"on_device_fault must be one of {', '.join(FAULT_POLICIES)}, got {self.fault_policy!r}")
        margin = config.state_margin if config.state_margin is not None else (
            rc.state_margin if rc is not None else DEFAULT_STATE_MARGIN)
        max_bad = config.max_bad_states if config.max_bad_states is not None else (
            rc.max_bad_states if rc is not None else DEFAULT_MAX_BAD_STATES)
        if not (isinstance(max_bad, int) and max_bad >= 1) or not (0.0 <= float(margin) <= 1.0):
            raise LoopError(f"max_bad_states must be >= 1 and state_margin in [0, 1], got {max_bad!r}, {margin!r}")
        self.state_check = StateCheck.for_device(self.caps, margin, max_bad)
        if rc is not None and rc.link_give_up_s is not None:
            self.config = config = replace(config, link_give_up_s=rc.link_give_up_s)
        self.reports = DeviceReports(fault_flag_limit=config.fault_flag_limit)
        if sh.image_shape is not None and camera is None:
            raise LoopError("this policy sees a camera: give the loop a camera (runtime.cameras)")
        frame_shape = (sh.image_shape[1], sh.image_shape[2], sh.image_shape[0]) if sh.image_shape else None
        # Frames are paired with States by capture time and checked every tick (runtime.cameras.monitor).
        self.camera = as_timed_source(camera) if camera is not None and frame_shape is not None else None
        self.frame_monitor: Optional[FrameMonitor] = None
        self._frame_pixels: Optional[np.ndarray] = None
        self._camera_epoch = -math.inf  # a simulated plant's reset: frames captured before it show another scene
        if self.camera is not None:
            max_age = config.camera_max_age_s if config.camera_max_age_s is not None else default_max_age(self.period)
            if not (math.isfinite(max_age) and 0 < max_age <= 60 and config.camera_max_repeat >= 1
                    and config.camera_max_stale >= 1):
                raise LoopError(f"camera limits must be: max age in (0, 60] s, max repeat >= 1, max stale >= 1; got "
                                f"{max_age!r}, {config.camera_max_repeat!r}, {config.camera_max_stale!r}")
            self.frame_monitor = FrameMonitor(max_age, config.camera_max_repeat, config.camera_max_stale,
                                              shape=frame_shape)
        self.history = ObservationHistory(sh.obs_horizon, sh.state_dim, frame_shape)
        self.schedule = ActionSchedule(sh.obs_horizon, sh.action_horizon, config.use_tail)
        self.watch = LinkWatch(config.stale_timeout_s)
        if isinstance(config.link_error_budget, bool) or not (
                isinstance(config.link_error_budget, (int, float)) and 0.0 <= config.link_error_budget <= 1.0):
            raise LoopError(f"link error budget must be a fraction in [0, 1], got {config.link_error_budget!r}")
        self.stats = RunStats(mode="lockstep" if config.lockstep else "realtime", period_s=self.period,
                              link_error_budget=float(config.link_error_budget))
        self.stats.limits = limits.as_dict()
        self.stats.limits.update({"on_device_fault": self.fault_policy,
                                  "state_margin": self.state_check.margin_fraction,
                                  "max_bad_states": self.state_check.max_bad,
                                  "robot_config": rc.as_dict() if rc is not None else None})
        self.stats.task = {"source": t.source, "success_signal": t.success_signal,
                           "success_threshold": t.success_threshold,
                           "observations": dict(zip(t.obs_names, self.mapper.sources)),
                           "action_joints": dict(zip(t.action_names, self.actions.targets))}
        self.log = StepLog(config.log_steps)
        self.status = LiveStatus()
        self._estop_requested = False
        self._stop_requested = False
        self._commanded = False  # a command went out since the device's flags were last looked at
        self._plans_made = 0
        self._warmed = False
        self._latencies: deque[float] = deque(maxlen=8)
        self._run_t0 = 0.0
        self._recent_jitter: deque[float] = deque(maxlen=max(1, int(round(1.0 / self.period))))
        self.planner: Optional[Planner] = None
        if not config.lockstep:
            self.planner = Planner(self._plan_fn, lambda: self.policy.reset(), nice=config.planner_nice,
                                   info_fn=lambda: self.policy.last_plan_info)

    # ------------------------------------------------------------------ control from outside
    def request_estop(self) -> None:
        """Safe from a signal handler: the next tick engages the e-stop and ends the run."""
        self._estop_requested = True

    def request_stop(self) -> None:
        """End the run after the current tick (no e-stop)."""
        self._stop_requested = True

    def close(self) -> None:
        if self.planner is not None:
            self.planner.close()

    # ------------------------------------------------------------------ planning
    def _plan_fn(self, obs_state: np.ndarray, obs_image: Optional[np.ndarray]) -> np.ndarray:
        index = self._plans_made
        self._plans_made += 1
        chunk = self.policy.plan(obs_state, obs_image)
        if self.config.faults.nan_plan is not None and index == self.config.faults.nan_plan:
            chunk = np.full_like(np.asarray(chunk, dtype=np.float32), np.nan)  # injected: a broken plan
        return chunk

    def _seed_policy(self, seed: int) -> None:
        """Give the episode its own policy random stream (seed base_seed + episode), as the in-process
        evaluation does (policy.reset(seed=...)). Call only while the planner is idle."""
        if not self.config.seed_policy_per_episode:
            return
        if self.policy.seed == seed and self._plans_made == 0 and not self._warmed:
            return  # a fresh policy made with this very seed
        self.policy.reset(seed=seed)
        self.stats.settings["policy_seeding"] = "reset(seed)"

    def _to_robot(self, action: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """A planned action (task order) as joint targets in the robot's order; None stays None (hold)."""
        return None if action is None else self.actions.to_robot(action)

    def _images_for_policy(self) -> Optional[np.ndarray]:
        imgs = self.history.images()
        return None if imgs is None else np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))  # [To,H,W,3]->[To,3,H,W]

    def _frame(self) -> Optional[np.ndarray]:
        """The frame paired with the State being observed (set by _camera_ok)."""
        return self._frame_pixels

    def _paired_frame(self, t_state: float, wait_s: float) -> Any:
        assert self.camera is not None
        return paired_frame(self.camera, t_state, wait_s, self._camera_epoch)

    def _camera_ok(self, state: State, now: Optional[float]) -> bool:
        """Pick the frame captured nearest to (not after) the State's time and check it (age at `now`, or
        at the State's time in lock-step, where the loop's own planning time is not the camera's age).
        False: hold this tick (counted by the monitor)."""
        assert self.camera is not None and self.frame_monitor is not None
        t_state = state.rx_time if math.isfinite(state.rx_time) else time.monotonic()
        wait = self.frame_monitor.max_age_s if now is None else 0.0  # lock-step: wait for this State's frame
        frame = self._paired_frame(t_state, wait)
        ok = self.frame_monitor.check(frame, t_state if now is None else now)
        self._frame_pixels = frame.pixels if ok and frame is not None else None
        return ok

    # ------------------------------------------------------------------ robot helpers
    def _reset_plant(self, seed: int) -> Optional[State]:
        if self.simulated and isinstance(self.robot, SimulatedRobot):  # the isinstance is for the type checker
            state = self.robot.reset_plant(seed, timeout=self.config.reset_timeout_s)
            if self.camera is not None and self.frame_monitor is not None and state is not None \
                    and math.isfinite(state.rx_time):
                # The plant jumped to a new scene: use only frames captured since, and give the camera
                # time to deliver one before the first tick (not counted: nothing is driven yet).
                self._camera_epoch = state.rx_time
                self.camera.frame_at(state.rx_time, max(self.frame_monitor.max_age_s, 0.5))
            return state
        return self.robot.latest_state()  # hardware: the episode starts where the robot is

    def _send(self, targets: np.ndarray) -> Optional[int]:
        self._commanded = True
        return self.robot.send_command(targets)

    def _step_lockstep(self, targets: np.ndarray) -> State:
        self._commanded = True
        if self.simulated and isinstance(self.robot, SimulatedRobot):
            return self.robot.step(targets, timeout=self.config.step_timeout_s)
        seq = self.robot.send_command(targets)
        if seq is None:
            raise ConnectionError("could not send the command")
        return self.robot.wait_state(after_seq=seq, timeout=self.config.step_timeout_s)

    def _aborted(self, ep: EpisodeStats) -> bool:
        """An e-stop or stop was requested (by a signal handler or the CLI), or the run must stop: end the episode."""
        if self._estop_requested:
            self._engage_estop("operator interrupt")
            ep.aborted = "estop"
        elif self._stop_requested:
            ep.aborted = "stopped"
        elif self.stats.stop_reason:
            ep.aborted = ep.aborted or "stopped"
        return bool(ep.aborted)

    def _stop_run(self, ep: Optional[EpisodeStats], reason: str, estop: bool = True) -> None:
        """End the run early (exit code 4): record why, and make the device hold in e-stop."""
        if not self.stats.stop_reason:
            self.stats.stop_reason = reason
        if ep is not None and not ep.aborted:
            ep.aborted = reason[:60]
        if estop:
            self._engage_estop(reason)

    def _estop_shown_since(self, t0: float) -> bool:
        """A State received after t0 carries the ESTOP flag (the device says it is holding in e-stop)."""
        try:
            st = self.robot.latest_state()
        except Exception:
            return False
        return st is not None and bool(st.flags & StatusFlags.ESTOP) and st.rx_time >= t0

    def _engage_estop(self, reason: str = "") -> bool:
        """Engage the e-stop and retry until the device confirms it or `estop_confirm_s` has passed.
        Returns whether it was confirmed; stats.estop records the attempts (never claims more)."""
        if self.stats.estop.get("requested"):
            return bool(self.stats.estop.get("confirmed"))
        self.safety.engage_estop()
        self.stats.counters.estops += 1
        cfg = self.config
        t0 = time.monotonic()
        deadline = t0 + cfg.estop_confirm_s
        attempts, confirmed, error = 0, False, ""
        while True:
            attempts += 1
            try:
                confirmed = bool(self.robot.estop(True))
            except Exception as exc:  # the link may be down: keep trying until the deadline
                error = _one_line(exc)
            confirmed = confirmed or self._estop_shown_since(t0)
            if confirmed or time.monotonic() >= deadline:
                break
            time.sleep(cfg.estop_retry_s)
        self.stats.estop = {"requested": True, "reason": reason, "confirmed": confirmed, "attempts": attempts,
                            "error": error, "seconds": round(time.monotonic() - t0, 3)}
        return confirmed

    def _release_estop_at_start(self) -> bool:
        """--release-estop: EStop(engage=False) until the device confirms it and a State shows the flag clear."""
        cfg = self.config
        t0 = time.monotonic()
        deadline = t0 + cfg.estop_confirm_s
        acked = False
        while time.monotonic() < deadline:
            try:
                acked = acked or bool(self.robot.estop(False))
            except Exception:
                acked = False
            if acked:
                try:
                    st = self.robot.latest_state()
                except Exception:
                    st = None
                if st is not None and not st.flags & StatusFlags.ESTOP and st.rx_time >= t0:
                    return True
            time.sleep(cfg.estop_retry_s)
        return False

    def _first_state(self) -> Optional[State]:
        st = self.robot.latest_state()
        if st is None:
            try:
                st = self.robot.wait_state(timeout=self.config.first_state_timeout_s)
            except Exception:  # no State yet: the loop's link watch handles a silent device
                st = None
        return st

    def preflight(self) -> bool:
        """Before the first episode: a device whose e-stop is latched is not driven unless the operator
        asked to release it (--release-estop), and then only after the device confirmed the release."""
        st = self._first_state()
        self.stats.settings["release_estop"] = self.config.release_estop
        if st is None or not st.flags & StatusFlags.ESTOP:
            return True
        if not self.config.release_estop:
            self.stats.stop_reason = ("the device's e-stop is engaged: make the robot safe, then run again with "
                                      "--release-estop")
            return False
        if not self._release_estop_at_start():
            self.stats.stop_reason = "--release-estop: the device did not confirm the e-stop release"
            return False
        self.stats.settings["estop_released_at_start"] = True
        return True

    def _device_verdict(self, state: Optional[State]) -> Optional[Verdict]:
        """Drain the device's Faults and look at the State's flags; counts go into the run statistics."""
        ours = self.safety.estopped
        v1 = self.reports.on_faults(self.reports.drain(self.robot), ours)
        v2 = self.reports.on_state(state, ours, self._commanded)
        if state is not None:
            self._commanded = False
        c = self.stats.counters
        c.device_faults, c.refused_commands = self.reports.total_faults, self.reports.refused
        for v in (v1, v2):
            if v is not None and v.kind == "estop":
                return v
        return v1 or v2

    def _react_to_device(self, state: Optional[State], ep: EpisodeStats) -> Optional[bool]:
        """What the device reported decides this tick: None = the run was stopped (a device e-stop, or a
        fault under --on-device-fault stop); True = hold for a fault; False = carry on."""
        verdict = self._device_verdict(state)
        if verdict is None:
            return False
        if verdict.kind == "estop" or self.fault_policy == "stop":
            self._stop_run(ep, verdict.text)
            return None
        return True

    # ------------------------------------------------------------------ process settings
    def _enter_realtime(self) -> dict[str, Any]:
        cfg = self.config
        restore: dict[str, Any] = {}
        if cfg.switch_interval_s:
            restore["switch"] = sys.getswitchinterval()
            sys.setswitchinterval(cfg.switch_interval_s)
        if cfg.gc_freeze:
            gc.collect()
            gc.freeze()  # setup objects (sessions, arrays) are never scanned again
            restore["gc"] = gc.isenabled()
        prio = "off"
        if cfg.realtime_priority > 0 and not cfg.lockstep and hasattr(os, "sched_setscheduler"):
            try:  # pid 0 = the calling thread on Linux; threads started earlier keep their policy
                restore["sched"] = (os.sched_getscheduler(0), os.sched_getparam(0))
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(cfg.realtime_priority))
                prio = f"SCHED_FIFO {cfg.realtime_priority}"
            except (OSError, PermissionError) as exc:
                restore.pop("sched", None)
                prio = f"unavailable ({exc.strerror or exc})"
        if "sched" in restore:
            # A thread that holds the GIL and is preempted by an unrelated process stalls the tick thread
            # (priority inversion through the GIL): the threads that take the GIL get real-time priority too.
            raised = []
            helpers = [t for t in threading.enumerate() if t.name.startswith(tuple(cfg.rt_helper_threads))]
            targets = [(t, max(1, cfg.realtime_priority - 1)) for t in helpers]
            if cfg.rt_planner and self.planner is not None:
                targets.append((self.planner.thread, max(1, cfg.realtime_priority - 2)))
            for t, p in targets:
                if t.native_id is not None and _set_fifo(t.native_id, p):
                    raised.append(t.native_id)
                    self.stats.settings.setdefault("rt_threads", []).append(f"{t.name}: SCHED_FIFO {p}")
            restore["raised"] = raised
        self.stats.settings.update({"tick_thread_priority": prio, "spin_s": cfg.spin_s,
                                    "switch_interval_s": cfg.switch_interval_s, "gc_freeze": cfg.gc_freeze,
                                    "planner_nice": cfg.planner_nice, "period_s": self.period,
                                    "lockstep": cfg.lockstep})
        return restore

    def _leave_realtime(self, restore: dict[str, Any]) -> None:
        for tid in restore.get("raised", []):
            try:
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
            except OSError:  # the thread may have ended
                pass
        if "sched" in restore:
            try:
                policy, param = restore["sched"]
                os.sched_setscheduler(0, policy, param)
            except OSError:
                pass
        if "gc" in restore:
            gc.unfreeze()
            if restore["gc"]:
                gc.enable()
        if "switch" in restore:
            sys.setswitchinterval(restore["switch"])

    # ------------------------------------------------------------------ run
    def run(self) -> RunStats:
        """Run the episodes. Never raises for what happens inside the run: an exception, a device
        e-stop or fault, bad States or a lost link stop the run (stats.stop_reason / stats.error) with
        the device e-stopped; the statistics are complete either way."""
        restore = self._enter_realtime()
        t_start = time.monotonic()
        self._run_t0 = t_start
        epstats: Optional[EpisodeStats] = None
        try:
            if self.preflight():
                for ep in range(self.config.episodes):
                    if (self._estop_requested or self._stop_requested or self.safety.estopped
                            or self.stats.stop_reason):
                        break
                    if self.config.gc_freeze:
                        gc.collect()
                        gc.disable()  # no collector pauses inside an episode; garbage is collected between
                    seed = self.config.base_seed + ep
                    epstats = EpisodeStats(index=ep, seed=seed)
                    self.stats.episodes.append(epstats)
                    self.status.episode = ep
                    if self.config.lockstep:
                        self._episode_lockstep(epstats)
                    else:
                        self._episode_realtime(epstats)
                    if self.config.gc_freeze:
                        gc.enable()
        except Exception as exc:  # never die silently: stop, e-stop, and let the caller write the outputs
            self.stats.error = f"{type(exc).__name__}: {_one_line(exc)}"
            self._stop_run(epstats, f"error inside the run: {self.stats.error}")
        finally:
            if self.config.gc_freeze and not gc.isenabled():
                gc.enable()
            if self._estop_requested and not self.safety.estopped:  # requested between episodes or before any
                self._engage_estop("operator interrupt")
            self._leave_realtime(restore)
            self._finish_stats(t_start)
        return self.stats

    def _finish_stats(self, t_start: float) -> None:
        self.stats.wall_s = time.monotonic() - t_start
        self.stats.interrupted = self._estop_requested or self._stop_requested
        c = self.stats.counters
        c.nan_blocked, c.clipped, c.rate_limited = (self.safety.counts.nan_blocked, self.safety.counts.clipped,
                                                    self.safety.counts.rate_limited)
        c.dropped_actions = self.schedule.dropped
        c.link_loss_events, c.link_recoveries = self.watch.losses, self.watch.recoveries
        try:  # faults that arrived during the last tick
            self.reports.on_faults(self.reports.drain(self.robot), True)
        except Exception:
            pass
        c.device_faults, c.refused_commands = self.reports.total_faults, self.reports.refused
        c.bad_states = self.state_check.bad_total
        self.stats.device = self.reports.as_dict()
        self.stats.states = self.state_check.as_dict()
        if self.camera is not None and self.frame_monitor is not None:
            from runtime.stats import percentiles
            c.camera_holds = self.frame_monitor.holds
            self.stats.camera = {**self.camera.as_dict(), **self.frame_monitor.as_dict(),
                                 "frame_age_ms": percentiles(self.frame_monitor.ages_s, 1e3)}
        try:
            self.stats.link = _link_stats(self.robot)
        except Exception:
            self.stats.link = {}
        self.stats.step_log = self.log
        self.status.done = True

    # ------------------------------------------------------------------ shared tick pieces
    def _hold_gate(self, source: str) -> Any:
        """The check that refused a tick: the State check ("bad-state") or the frame monitor ("camera-hold")."""
        gate = self.state_check if source == "bad-state" else self.frame_monitor
        assert gate is not None
        return gate

    def _count_hold(self, source: str) -> None:
        c = self.stats.counters
        c.held_ticks += 1
        if source == "camera-hold":
            c.camera_holds += 1

    def _lockstep_hold(self, ep: EpisodeStats, step: int, plan_id: int, state: State,
                       source: str) -> Optional[State]:
        """Lock-step, a tick refused by the State check or the camera: hold the last command. The next
        State, or None when the episode ends here (too many refusals, out of steps, nothing to hold)."""
        gate = self._hold_gate(source)
        if gate.exhausted:
            self._stop_run(ep, gate.stop_reason())
            return None
        if step >= self.config.max_steps:
            return None
        fr = self.safety.hold(None)
        if fr.command is None:  # no command yet to hold: lock-step cannot go on without one
            self._stop_run(ep, f"{_NOTHING_TO_HOLD[source]} ({gate.last_error})")
            return None
        self._count_hold(source)
        self._record(ep.index, step, step, math.nan, math.nan, source, plan_id, None, fr, state)
        return self._lockstep_send(ep, fr.command)

    def _realtime_hold(self, ep: EpisodeStats, step: int, k: int, deadline: float, now: float, state: State,
                       source: str) -> bool:
        """Real time, a tick refused by the State check or the camera: hold the last command (or send
        nothing before the first). False when the run stops here (too many refusals in a row)."""
        gate = self._hold_gate(source)
        if gate.exhausted:
            self._stop_run(ep, gate.stop_reason())
            return False
        fr = self.safety.hold(None)
        if fr.command is not None and self._send(fr.command) is None:
            self.stats.counters.send_failures += 1
        self._count_hold(source)
        self._record(ep.index, step, k, deadline, now, source, -1, None, fr, state)
        return True

    def _observe(self, state: State, ep: EpisodeStats) -> tuple[bool, float]:
        """Push the State into the history; returns (the task succeeded, its success signal's value)."""
        self.history.push(self.mapper(state.positions, state.extras), self._frame())
        value = self.mapper.progress(state.positions, state.extras)
        thr = self.shape.task.success_threshold
        if value is None or thr is None:
            return False, math.nan
        if math.isfinite(value):  # a State check lets only finite values through; never count NaN as progress
            ep.final_progress = value
            ep.max_progress = value if math.isnan(ep.max_progress) else max(ep.max_progress, value)
        self.status.progress = value
        return self.config.end_on_success and value >= thr, value

    def _record(self, ep: int, step: int, tick: int, deadline: float, start: float, source: str, plan_id: int,
                action: Optional[np.ndarray], fr: Optional[FilterResult], state: Optional[State]) -> None:
        if not self.log.enabled:
            return
        self.log.add(StepRecord(ep, step, tick, deadline - self._run_t0, start - self._run_t0,
                                source, plan_id, None if action is None else np.array(action, np.float32),
                                None if fr is None or fr.command is None else fr.command,
                                np.asarray(state.positions) if state is not None else np.zeros(0),
                                np.asarray(state.extras) if state is not None else np.zeros(0)))

    # ------------------------------------------------------------------ lock-step episode
    def _episode_lockstep(self, ep: EpisodeStats) -> None:
        cfg, sh, c = self.config, self.shape, self.stats.counters
        t_ep = time.monotonic()
        state = self._reset_plant(ep.seed)
        self._seed_policy(ep.seed)
        self.policy.reset()
        self.history.reset()
        self.safety.reset()
        held0, dropped0 = c.held_ticks, self.schedule.dropped
        actions: Optional[np.ndarray] = None
        plan_id = -1
        step = 0
        while True:
            if self._aborted(ep):
                break
            fault_hold = self._react_to_device(state, ep)
            if fault_hold is None:
                break
            # A bad State or an unusable frame never becomes an observation: hold the last command.
            refused = ("bad-state" if not self.state_check.check(state)
                       else "camera-hold" if self.camera is not None and not self._camera_ok(state, None) else None)
            if refused is not None:
                state = self._lockstep_hold(ep, step, plan_id, state, refused)
                if state is None:
                    break
                step += 1
                continue
            success, _ = self._observe(state, ep)
            if success:
                ep.success = True
                break
            if step >= cfg.max_steps:
                break
            t_tick = time.perf_counter()
            if step % sh.action_horizon == 0:
                t0 = time.perf_counter()
                try:
                    chunk = np.asarray(self._plan_fn(self.history.states(), self._images_for_policy()), np.float32)
                    actions = executed_rows(chunk, sh.obs_horizon, sh.action_horizon)
                    plan_id += 1
                except Exception:  # a failed plan is never executed: hold for this plan's steps
                    c.plan_errors += 1
                    actions = None
                c.plans += 1
                lat = time.perf_counter() - t0
                self.stats.plan_latency_s.append(lat)
                self.status.plan_ms = lat * 1e3
            action = None
            if actions is not None and step % sh.action_horizon < len(actions):
                action = actions[step % sh.action_horizon]
            if fault_hold:  # the device refused or faulted: hold where the robot is, step on from there
                self.safety.reset()
                fr = self.safety.hold(state.positions)
                c.fault_holds += 1
            else:
                fr = self.safety.filter(self._to_robot(action), state.positions)
            if action is None or fr.held:
                c.held_ticks += 1
            source = "fault-hold" if fault_hold else ("plan" if action is not None else "hold")
            self._record(ep.index, step, step, math.nan, math.nan, source, plan_id, action, fr, state)
            if fr.command is None:  # e-stop or no reference at all: nothing can be sent
                ep.aborted = fr.reason
                break
            state = self._lockstep_send(ep, fr.command)
            if state is None:
                break
            c.ticks += 1
            self.stats.tick_work_s.append(time.perf_counter() - t_tick)
            step += 1
            self.status.step = step
        ep.steps = step
        ep.held_ticks = c.held_ticks - held0
        ep.dropped_actions = self.schedule.dropped - dropped0
        ep.wall_s = time.monotonic() - t_ep

    def _lockstep_send(self, ep: EpisodeStats, command: np.ndarray) -> Optional[State]:
        """Send one command and return the State it produced; on link trouble wait for the link to come
        back and go on from its State. None when the link is gone for good (the run stops)."""
        try:
            return self._step_lockstep(command)
        except Exception as exc:
            self.watch.check(False, None)
            state = self._wait_link(ep)
            if state is None:
                if not (self._estop_requested or self._stop_requested):
                    self._stop_run(ep, f"link lost: {_one_line(exc)}")
                return None
            self.watch.check(True, state, state.rx_time)
            return state

    def _wait_link(self, ep: EpisodeStats) -> Optional[State]:
        """Block (lock-step only) until the link is healthy again; its latest State, or None on give-up."""
        give_up = time.monotonic() + self.config.link_give_up_s
        while time.monotonic() < give_up and not (self._estop_requested or self._stop_requested):
            st = self.robot.latest_state()
            if self.robot.healthy and st is not None:
                return st
            time.sleep(0.01)
        return None

    # ------------------------------------------------------------------ real-time episode
    def _wait_until(self, deadline: float) -> float:
        """Sleep until `deadline` (spinning the last spin_s), in slices so that an e-stop or stop request
        is acted on within one slice whatever the period; returns early on such a request."""
        spin = self.config.spin_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= spin:
                break
            if self._estop_requested or self._stop_requested:
                return time.monotonic()
            time.sleep(min(remaining - spin, self.config.wait_slice_s))
        now = time.monotonic()
        while now < deadline:  # the last `spin` seconds: sleep's wake-up latency is not precise enough
            now = time.monotonic()
        return now

    def _injected_jump(self, ep: EpisodeStats, step: int, command: np.ndarray) -> np.ndarray:
        f = self.config.faults
        if (f.jump_at_step is None or ep.index != f.stall_episode
                or not f.jump_at_step <= step < f.jump_at_step + f.jump_count):
            return command
        self.stats.settings["injected_jumps"] = self.stats.settings.get("injected_jumps", 0) + 1
        lo, hi = self.state_check.lower, self.state_check.upper  # inside the device's box: only the step is wrong
        up = np.clip(command + f.jump_px, lo, hi)
        down = np.clip(command - f.jump_px, lo, hi)
        return np.where(np.abs(up - command) >= np.abs(down - command), up, down).astype(np.float32)

    def _warm_up(self, state: State, plans: int = 2) -> None:
        """Plan a couple of times before the first tick (the planner thread is idle): onnxruntime's
        first runs are slow, and the measured latency sets the first plans' lead."""
        if self.state_check.problem(state) is not None:
            return  # never plan from a bad State; the first ticks measure the latency instead
        if self.camera is not None:  # the frame of this State (nothing is counted: warm-up plans are discarded)
            t = state.rx_time if math.isfinite(state.rx_time) else time.monotonic()
            frame = self._paired_frame(t, self.frame_monitor.max_age_s if self.frame_monitor else 0.0)
            if (frame is None or self.frame_monitor is None or self.frame_monitor.problem_of(frame) is not None
                    or abs(t - frame.t_capture) > self.frame_monitor.max_age_s):
                return  # no usable frame yet: the first ticks measure the latency instead
            self._frame_pixels = frame.pixels
        self.history.reset()
        self.history.push(self.mapper(state.positions, state.extras), self._frame())
        for _ in range(plans):
            t0 = time.perf_counter()
            self.policy.plan(self.history.states(), self._images_for_policy())
            self._latencies.append(time.perf_counter() - t0)
        self._warmed = True

    def _accept(self, res: PlanResult, tick: int) -> None:
        c = self.stats.counters
        c.plans += 1
        self._latencies.append(res.latency_s)
        self.stats.plan_latency_s.append(res.latency_s)
        self.status.plan_ms = res.latency_s * 1e3
        if res.chunk is None:
            c.plan_errors += 1
            return
        req = res.request
        self.schedule.place(res.chunk, req.obs_tick, req.handover, req.plan_id, tick)

    def _episode_realtime(self, ep: EpisodeStats) -> None:
        cfg, sh, c = self.config, self.shape, self.stats.counters
        assert self.planner is not None
        P = self.period
        tol = cfg.miss_tolerance * P
        max_lead = max(1, sh.pred_horizon - sh.obs_horizon + 1 - sh.action_horizon)
        t_ep = time.monotonic()
        self.planner.invalidate()
        state = self._reset_plant(ep.seed)
        if not self._warmed and state is not None:
            self._warm_up(state)
        self.planner.wait_idle()  # the policy is ours to change only while no plan runs
        self._seed_policy(ep.seed)
        self.planner.reset_policy()
        self.history.reset()
        self.schedule.clear()
        self.safety.reset()
        held0, dropped0 = c.held_ticks, self.schedule.dropped
        next_handover: Optional[int] = None   # None: no plan yet (episode start or after a link loss)
        overrun_noted = -1
        plan_id = 0
        step = 0
        k = 0
        t0 = time.monotonic() + P
        stall = cfg.faults
        while step < cfg.max_steps:
            deadline = t0 + k * P
            now = self._wait_until(deadline)
            if self._aborted(ep):
                break
            late = now - deadline
            if late >= P:  # the host stalled past whole periods: skip those ticks, never burst
                skip = int(late // P)
                k += skip
                deadline += skip * P
                late = now - deadline
                c.skipped_ticks += skip
                c.missed_deadlines += skip
            if late > tol:
                c.missed_deadlines += 1
            self.stats.jitter_s.append(abs(late))
            self._recent_jitter.append(abs(late))
            c.ticks += 1

            state = self.robot.latest_state()
            fault_hold = self._react_to_device(state, ep)
            if fault_hold is None:
                break
            was_lost = self.watch.lost
            if not self.watch.check(self.robot.healthy, state, now):
                if not was_lost:  # stop planning; what was planned from old observations is void
                    self.planner.invalidate()
                    self.schedule.clear()
                    next_handover = None
                c.link_hold_ticks += 1
                self.status.link_ok = False
                self._record(ep.index, step, k, deadline, now, "link-hold", -1, None, None, state)
                if now - self.watch.lost_since > cfg.link_give_up_s:
                    self._stop_run(ep, f"link lost for more than {cfg.link_give_up_s:g} s")
                    break
                k += 1
                continue
            if was_lost:  # recovered: a fresh history and a fresh plan, rate limits from where the robot is
                self.history.reset()
                self.safety.reset()
                self.status.link_ok = True

            if not self.state_check.check(state):
                # A bad State never becomes an observation: hold the last command (or send nothing), count it.
                if not self._realtime_hold(ep, step, k, deadline, now, state, "bad-state"):
                    break
                k += 1
                continue
            if fault_hold:  # the device refused or faulted: hold where the robot is, step on from there
                self.safety.reset()
                fr = self.safety.hold(state.positions)
                if fr.command is not None and self._send(fr.command) is None:
                    c.send_failures += 1
                c.fault_holds += 1
                c.held_ticks += 1
                self._record(ep.index, step, k, deadline, now, "fault-hold", -1, None, fr, state)
                step += 1
                k += 1
                continue
            if self.camera is not None and not self._camera_ok(state, now):
                # No fresh frame: the policy would plan from a scene that is gone. Hold the last command.
                if not self._realtime_hold(ep, step, k, deadline, now, state, "camera-hold"):
                    break
                k += 1
                continue

            success, _ = self._observe(state, ep)
            if success:
                ep.success = True
                break

            while (res := self.planner.poll()) is not None:
                self._accept(res, k)
            slot = self.schedule.take(k)
            action = slot.action if slot is not None else None
            fr = self.safety.filter(self._to_robot(action), state.positions)
            if fr.command is not None:
                if self._send(self._injected_jump(ep, step, fr.command)) is None:
                    c.send_failures += 1
            t_sent = time.monotonic()
            self.stats.tick_work_s.append(t_sent - now)
            if slot is None:
                c.held_ticks += 1
                source = "hold"
            else:
                source = "plan" if slot.designated else "tail"
                c.tail_ticks += not slot.designated
            if fr.reason == "estop":
                ep.aborted = "estop"
                break

            # Planning: request the next plan `lead` ticks before its handover, from this tick's observation.
            lead = lead_ticks(self._latencies, P, max_lead, cfg.lead_margin_s, cfg.lead_ticks)
            due = next_handover is None or k >= next_handover - lead
            if due:
                if self.planner.busy:
                    key = next_handover if next_handover is not None else -2
                    if overrun_noted != key:  # count each late handover once, not every tick it waits
                        c.plan_overruns += 1
                        overrun_noted = key
                else:
                    handover = k + lead if next_handover is None else max(next_handover, k + 1)
                    req = PlanRequest(plan_id, self.planner.generation, k, handover, self.history.states(),
                                      self._images_for_policy())
                    if self.planner.submit(req):
                        plan_id += 1
                        next_handover = handover + sh.action_horizon

            self._record(ep.index, step, k, deadline, now, source, slot.plan_id if slot else -1, action, fr, state)
            step += 1
            k += 1
            self.status.step = step
            self.status.held = c.held_ticks
            self.status.dropped = self.schedule.dropped
            self.status.jitter_ms = max(self._recent_jitter) * 1e3
            if stall.stall_at_step is not None and ep.index == stall.stall_episode and step - 1 == stall.stall_at_step:
                time.sleep(stall.stall_s)  # injected host stall (HIL test)
        # A plan still running belongs to this episode: its result is ignored (the next episode's
        # reset_policy waits for it to finish before resetting the policy).
        self.planner.invalidate()
        ep.steps = step
        ep.held_ticks = c.held_ticks - held0
        ep.dropped_actions = self.schedule.dropped - dropped0
        ep.wall_s = time.monotonic() - t_ep


def _narrowed(package: Optional[list[float]], task: Optional[tuple[float, ...]],
              pick: Callable[[float, float], float]) -> Optional[list[float]]:
    """The package's action range (training data) narrowed by the task's action limits, per dimension.
    A NaN on either side stays NaN (max/min keep their first argument), so runtime.safety refuses it."""
    if task is None or package is None or len(task) != len(package):
        return list(task) if package is None and task is not None else package
    return [p if p != p else (t if t != t else pick(p, t)) for p, t in zip(package, task)]


def _one_line(exc: Any, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]


def _set_fifo(tid: int, priority: int) -> bool:
    try:  # Linux: a thread id is accepted where a pid is
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except OSError:
        return False


def _link_stats(robot: Robot) -> dict[str, Any]:
    st = robot.stats
    d = asdict(st)
    d.pop("last_fault", None)
    lf = st.last_fault
    if lf is not None:
        d["last_fault"] = f"{lf.code.name if isinstance(lf.code, enum.Enum) else lf.code}: {lf.text}"
    return d


def run_episodes(policy: PolicyLike, robot: Robot, config: LoopConfig, capabilities: Capabilities,
                 camera: Optional[FrameSource] = None, on_start: Optional[Callable[[ControlLoop], None]] = None,
                 task: Optional[TaskNames] = None) -> RunStats:
    """Run `config.episodes` episodes of `policy` on a connected `robot` (`capabilities`: what its
    connect() returned); the run's statistics. `on_start(loop)` is called before the first tick (to hook
    up e-stop handling or a status line)."""
    loop = ControlLoop(policy, robot, config, capabilities, camera, task)
    try:
        if on_start is not None:
            on_start(loop)
        return loop.run()
    finally:
        loop.close()
