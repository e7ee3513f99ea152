"""The recording loop: one episode at a time, a source's command every control period, through the
runtime's safety pieces (the same limits as imle-run: device Capabilities, robot config, task action
range; a per-command step limit; State checks; device faults and e-stop), into per-episode arrays.

Each tick records the robot's state (every column of the task's observation.state.names, by name),
the command actually sent (after the safety filter, in the task's action order) and the camera frame
paired with that State by capture time (runtime.cameras: FrameStream.frame_at, checked by a
FrameMonitor exactly as imle-run checks it). A stale, future-dated, missing or frozen (repeated) frame
is never recorded: it is counted and ends the episode with `ended = "camera ...: why"`, not stored.
An episode ends when the source says it is done, the task's success signal reaches its threshold, or
after max_steps; anything else (device e-stop or fault, a bad State, link lost, a non-finite command,
an operator stop) aborts it and its rows are not offered for storing.

With a start pose (imle-record --start), the episode begins with a move to that pose
(runtime.record.start: slow, inside the robot's limits, not recorded); a robot that does not get there
aborts the episode with one line.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from firmware_bridge.protocol import Capabilities, State
from firmware_bridge.robot import Robot, SimulatedRobot, is_simulated
from runtime.binding import ActionMapper
from runtime.cameras.frame import Frame
from runtime.cameras.monitor import DEFAULT_MAX_REPEAT, FrameMonitor, default_max_age
from runtime.cameras.timed import UntimedSource, as_timed_source
from runtime.cameras.stream import paired_frame
from runtime.device_reports import DeviceReports
from runtime.record.sources import DemoSource, EpisodeStart, Observation, as_action
from runtime.record.start import MoveResult, MoveToStartConfig, check_start, not_reached_line, plan_move
from runtime.safety import LinkWatch, SafetyFilter, SafetyLimits, check_period, effective_limits
from runtime.sensors import StateMapper
from runtime.state_check import StateCheck
from runtime.task_spec import TaskSpec

ENDED_OK = ("source", "success", "max_steps")


@dataclass
class RecordConfig:
    period_s: float
    max_steps: int = 1000
    lockstep: bool = False
    end_on_success: bool = True
    stale_timeout_s: float = 0.3
    reset_timeout_s: float = 2.0
    step_timeout_s: float = 2.0
    estop_confirm_s: float = 2.0
    wait_slice_s: float = 0.05
    move: MoveToStartConfig = field(default_factory=MoveToStartConfig)  # the move to a start pose
    # During the move (not recorded) a short loss of fresh States is waited out: a Franka starting a new
    # motion after a watchdog hold sends no State for ~0.1 s. Longer than this aborts the move.
    move_link_grace_s: float = 1.0
    # During an episode a tick without a fresh State waits this long for one (a loaded host can stall a
    # Franka's control process for ~0.1 s) before the episode is aborted; such late ticks are counted.
    link_grace_s: float = 0.3
    # The camera (an image task): a frame older than this at the tick (at its State's time in lock-step)
    # ends the episode unstored; None: imle-run's default (two periods, at least 0.1 s).
    camera_max_age_s: Optional[float] = None
    camera_max_repeat: int = DEFAULT_MAX_REPEAT  # the same frame for more ticks in a row than this: frozen
    camera_first_frame_s: float = 0.5  # after a simulated plant's reset, wait this long for a frame of it


@dataclass
class EpisodeResult:
    index: int
    seed: int
    data: dict[str, np.ndarray]    # data/<key> -> [steps, ...] rows
    steps: int
    ended: str                     # "source" | "success" | "max_steps" | why it was aborted
    success: Optional[bool] = None  # None: the task declares no success signal
    clipped: int = 0               # commands the safety filter changed (position box)
    rate_limited: int = 0          # ... or limited in step
    wall_s: float = 0.0
    late_ticks: int = 0            # ticks that had to wait for a fresh State (within link_grace_s)
    move: Optional[MoveResult] = None  # the move to the start pose, when one was given
    camera_stale: int = 0          # frames refused (stale, future, missing, frozen): each ends the episode
    camera_fps: float = math.nan   # the camera's frame rate (capture times) at the episode's end
    camera_problem: str = ""       # why a frame was refused ('' when none was)

    @property
    def complete(self) -> bool:
        return self.ended in ENDED_OK and self.steps > 0


class Recorder:
    """Records episodes from one connected robot for one task."""

    def __init__(self, robot: Robot, caps: Capabilities, task: TaskSpec, config: RecordConfig,
                 camera: Any = None, robot_config: Any = None,
                 obs_map: Optional[Mapping[str, str]] = None, joint_map: Optional[Mapping[str, str]] = None) -> None:
        """Raises MappingError / SafetyConfigError / RobotConfigError / ValueError (one line) when the task's
        names or limits do not fit the robot."""
        self.robot, self.caps, self.task, self.config = robot, caps, task, config
        self.period = check_period(config.period_s, "the task's period_s")
        self.simulated = is_simulated(robot, caps)
        rc = robot_config
        obs_map = {**(rc.obs_map if rc is not None else {}), **dict(obs_map or {})}
        joint_map = {**(rc.joint_map if rc is not None else {}), **dict(joint_map or {})}
        succ = task.success
        self.mapper = StateMapper(task.state.names, caps.joint_names, caps.extra_names, obs_map,
                                  succ.signal if succ is not None else None)
        self.actions = ActionMapper(task.action.joints, caps.joint_names, joint_map)
        self.limits: SafetyLimits = effective_limits(
            caps, self.period, rc, {"low": self.actions.limits_to_robot(task.action.low),
                                    "high": self.actions.limits_to_robot(task.action.high)})
        self.safety = SafetyFilter(self.limits)
        self.state_check = StateCheck.for_device(caps)
        self.reports = DeviceReports()
        # A FrameStream (runtime.cameras.open_stream); a camera with only latest() is stamped when read.
        self.camera = as_timed_source(camera) if camera is not None else None
        self.camera_max_age = (config.camera_max_age_s if config.camera_max_age_s is not None
                               else default_max_age(self.period))
        if not (math.isfinite(self.camera_max_age) and 0 < self.camera_max_age <= 60):
            raise ValueError(f"camera max age must be in (0, 60] s, got {self.camera_max_age!r}")
        if isinstance(config.camera_max_repeat, bool) or not 1 <= config.camera_max_repeat <= 1_000_000:
            raise ValueError(f"camera max repeat must be an integer in 1..1000000, got {config.camera_max_repeat!r}")
        self.camera_stale = 0                 # over every episode (the session summary)
        self.camera_by_reason: dict[str, int] = {}
        self._camera_epoch = -math.inf        # a simulated plant's reset: older frames show another scene
        if task.images and camera is None:
            raise ValueError(f"task {task.name} records images ({task.images[0].key}): give a camera (--camera)")
        if len(task.images) > 1:
            raise ValueError(f"task {task.name} has {len(task.images)} cameras; imle-record records one")
        self._stop = False
        self.estop_confirmed: Optional[bool] = None  # None: no e-stop was needed

    # ------------------------------------------------------------------ control from outside
    def request_stop(self) -> None:
        """Safe from a signal handler: the episode in progress is aborted at the next tick (e-stop)."""
        self._stop = True

    @property
    def stopped(self) -> bool:
        return self._stop

    def engage_estop(self) -> bool:
        """E-stop, retried until the device confirms or estop_confirm_s passed (never claims more)."""
        self.safety.engage_estop()
        deadline = time.monotonic() + self.config.estop_confirm_s
        while True:
            try:
                if self.robot.estop(True):
                    self.estop_confirmed = True
                    return True
            except Exception:  # the link may be down: retry until the deadline
                pass
            if time.monotonic() >= deadline:
                self.estop_confirmed = False
                return False
            time.sleep(0.05)

    # ------------------------------------------------------------------ one episode
    def record_episode(self, source: DemoSource, index: int, seed: int,
                       start: Optional[np.ndarray] = None) -> EpisodeResult:
        """Record one demonstration; with `start` (task action order) the robot is first moved there.
        SourceError from the source propagates (the robot holds first); StartError (a start pose outside
        the robot's limits) is raised before anything moves."""
        t_ep = time.monotonic()
        res = EpisodeResult(index, seed, {}, 0, "")
        rows: dict[str, list[np.ndarray]] = {self.task.state.key: [], self.task.action.key: []}
        if self.task.images:
            rows[self.task.images[0].key] = []
        self.safety.reset()
        state = self._start_state(seed)
        monitor = self._new_monitor()
        if start is not None:
            res.move, state = self.move_to_start(start, state)
            if not res.move.reached:
                res.ended = res.move.reason
                if not self.safety.estopped:
                    self._hold(state)
                res.wall_s = time.monotonic() - t_ep
                res.data = {k: np.zeros((0,), np.float32) for k in rows}
                return res
            self.safety.reset()
        counts0 = (self.safety.counts.clipped, self.safety.counts.rate_limited)
        watch = LinkWatch(self.config.stale_timeout_s)
        step = 0
        began = False
        t0 = time.monotonic() + self.period
        try:
            while True:
                if self._stop:
                    res.ended = "stopped by the operator"
                    break
                if not self.config.lockstep:
                    self._wait_until(t0 + step * self.period)
                    if self._stop:
                        res.ended = "stopped by the operator"
                        break
                    state = self.robot.latest_state()
                    if not watch.check(self.robot.healthy, state):
                        state = self._wait_fresh(watch)
                        if state is None:
                            res.ended = f"link lost (no fresh State for {self.config.link_grace_s:g} s)"
                            break
                        res.late_ticks += 1
                problem = self._device_problem(state)
                if problem:
                    res.ended = problem
                    break
                pixels = None
                if monitor is not None:
                    pixels = self._camera_pixels(state, monitor)
                    if pixels is None:  # never record a wrong frame: counted, and the episode ends unstored
                        res.camera_stale += 1
                        res.camera_problem = monitor.last_error
                        key = next(iter(monitor.by_reason))
                        self.camera_stale += 1
                        self.camera_by_reason[key] = self.camera_by_reason.get(key, 0) + 1
                        res.ended = f"camera {key}: {monitor.last_error}"
                        break
                obs = self._observe(state, step, pixels)
                if not began:
                    source.begin(EpisodeStart(index, seed, self.task, obs))
                    began = True
                value = self.mapper.progress(state.positions, state.extras)
                if value is not None and self.task.success is not None:
                    res.success = bool(value >= self.task.success.threshold)
                    if res.success and self.config.end_on_success:
                        res.ended = "success"
                        break
                if step >= self.config.max_steps:
                    res.ended = "max_steps"
                    break
                raw = source.act(obs)
                if raw is None:
                    res.ended = "source"
                    break
                action = as_action(raw, len(self.task.action.names), step)
                if not np.all(np.isfinite(action)):
                    res.ended = f"the source returned a non-finite action at step {step}"
                    break
                fr = self.safety.filter(self.actions.to_robot(action), state.positions)
                if fr.command is None:
                    res.ended = f"no command could be sent ({fr.reason})"
                    break
                rows[self.task.state.key].append(obs.state)
                rows[self.task.action.key].append(self.actions.to_task(fr.command).astype(np.float32))
                if self.task.images:
                    rows[self.task.images[0].key].append(obs.image)
                step += 1
                if self.config.lockstep:
                    state = self._step(fr.command)
                    if state is None:
                        res.ended = "link lost (no State for a command)"
                        break
                elif self.robot.send_command(fr.command) is None:
                    res.ended = "the command could not be sent"
                    break
        finally:
            if res.ended not in ENDED_OK and not self.safety.estopped:
                self._hold(state)
        res.steps = step
        res.clipped = self.safety.counts.clipped - counts0[0]
        res.rate_limited = self.safety.counts.rate_limited - counts0[1]
        res.data = {k: np.stack(v) if v else np.zeros((0,), np.float32) for k, v in rows.items()}
        res.wall_s = time.monotonic() - t_ep
        if self.camera is not None:
            res.camera_fps = _finite_or_nan(self.camera.as_dict().get("fps"))
        return res

    # ------------------------------------------------------------------ move to start
    def move_to_start(self, start: np.ndarray, state: Optional[State]) -> tuple[MoveResult, Optional[State]]:
        """Drive the robot to `start` (task action order) along a slow ramp through the safety filter
        (runtime.record.start). Returns the result and the last State; StartError before any motion when
        the pose is outside the robot's limits."""
        cfg = self.config.move
        cfg.check()
        target = self.actions.to_robot(np.asarray(start, np.float64)).astype(np.float64)
        check_start(target, self.limits)
        names = tuple(self.limits.names) or tuple(self.caps.joint_names)
        if state is None:
            return MoveResult(False, 0, math.nan, not_reached_line(None, target, names, 0.0, cfg.tolerance)), None
        plan = plan_move(state.positions, target, self.period, cfg.speed, self.limits.max_step)
        settle = int(math.ceil(cfg.timeout_s / self.period))
        watch = LinkWatch(self.config.stale_timeout_s)
        self.safety.reset()
        t0 = time.monotonic() + self.period
        i = 0  # the ramp's index: it advances only while the link is fresh
        for k in range(len(plan) + settle + 1):
            err = float(np.max(np.abs(np.asarray(state.positions, np.float64) - target)))
            if self._stop:
                return MoveResult(False, k, err, "stopped by the operator"), state
            problem = self._device_problem(state)
            if problem:
                return MoveResult(False, k, err, f"move to start: {problem}"), state
            if err <= cfg.tolerance:
                return MoveResult(True, k, err), state
            if k == len(plan) + settle:
                break
            fr = self.safety.filter(plan[min(i, len(plan) - 1)], state.positions)
            if fr.command is None:
                return MoveResult(False, k, err, f"move to start: no command could be sent ({fr.reason})"), state
            if self.config.lockstep:
                nxt = self._step(fr.command)
                if nxt is None:
                    return MoveResult(False, k, err, "move to start: link lost (no State for a command)"), state
                state = nxt
            else:
                if self.robot.send_command(fr.command) is None:
                    return MoveResult(False, k, err, "move to start: the command could not be sent"), state
                self._wait_until(t0 + k * self.period)
                nxt = self.robot.latest_state()
                if not watch.check(self.robot.healthy, nxt):
                    if time.monotonic() - watch.lost_since > self.config.move_link_grace_s:
                        return MoveResult(False, k, err, f"move to start: link lost (no fresh State for "
                                                         f"{self.config.move_link_grace_s:g} s)"), state
                    continue  # resend the same target next tick
                state = nxt
            i += 1
        waited = (len(plan) + settle) * self.period
        return MoveResult(False, len(plan) + settle, err,
                          not_reached_line(np.asarray(state.positions), target, names, waited, cfg.tolerance)), state

    # ------------------------------------------------------------------ pieces
    def _start_state(self, seed: int) -> Optional[State]:
        if self.simulated and isinstance(self.robot, SimulatedRobot):
            state = self.robot.reset_plant(seed, timeout=self.config.reset_timeout_s)
            if self.camera is not None and state is not None and math.isfinite(state.rx_time):
                # The plant jumped to a new scene: only frames captured since show it; give the camera
                # time to deliver one before the first tick (as imle-run does).
                self._camera_epoch = state.rx_time
                if not isinstance(self.camera, UntimedSource):  # no timestamps: it cannot wait
                    self.camera.frame_at(state.rx_time, max(self.camera_max_age, self.config.camera_first_frame_s))
            return state
        st = self.robot.latest_state()
        if st is None:
            try:
                st = self.robot.wait_state(timeout=self.config.reset_timeout_s)
            except Exception:
                st = None
        return st  # hardware: the episode starts where the robot is

    def _step(self, command: np.ndarray) -> Optional[State]:
        try:
            if self.simulated and isinstance(self.robot, SimulatedRobot):
                return self.robot.step(command, timeout=self.config.step_timeout_s)
            seq = self.robot.send_command(command)
            if seq is None:
                return None
            return self.robot.wait_state(after_seq=seq, timeout=self.config.step_timeout_s)
        except Exception:
            return None

    def _device_problem(self, state: Optional[State]) -> str:
        """Why this State cannot be recorded ('' when it can): a device e-stop or fault, a bad State."""
        v1 = self.reports.on_faults(self.reports.drain(self.robot), self.safety.estopped)
        v2 = self.reports.on_state(state, self.safety.estopped, True)
        for v in (v1, v2):
            if v is not None:
                return f"device {v.kind}: {v.text}"
        bad = self.state_check.problem(state)
        if bad is not None:
            return f"bad State: {bad[1]}"
        return ""

    def _new_monitor(self) -> Optional[FrameMonitor]:
        """One per episode (a frame repeated across episodes is not a frozen camera); max_stale 1: the
        first refused frame ends the episode."""
        if self.camera is None or not self.task.images:
            return None
        return FrameMonitor(self.camera_max_age, self.config.camera_max_repeat, 1)

    def _paired_frame(self, t_state: float, wait_s: float) -> Optional[Frame]:
        assert self.camera is not None
        return paired_frame(self.camera, t_state, wait_s, self._camera_epoch)

    def _camera_pixels(self, state: State, monitor: FrameMonitor) -> Optional[np.ndarray]:
        """The pixels of the frame paired with `state`, or None when the monitor refuses it (its age is
        taken at the tick, or at the State's time in lock-step after waiting for the State's frame)."""
        now = time.monotonic()
        t_state = state.rx_time if math.isfinite(state.rx_time) else now
        lockstep = self.config.lockstep
        frame = self._paired_frame(t_state, monitor.max_age_s if lockstep else 0.0)
        if frame is not None:
            self._check_shape(frame.pixels)  # a camera of another size is a setup mistake, not a glitch
        if not monitor.check(frame, t_state if lockstep else now):
            return None
        assert frame is not None
        return np.asarray(frame.pixels, np.uint8)

    def _check_shape(self, pixels: Any) -> None:
        im = self.task.images[0]
        shape = list(np.shape(pixels))
        if shape != list(im.shape):
            raise ValueError(f"the camera gives frames of {shape}; task observation.images[0].shape is "
                             f"{list(im.shape)}")
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        if dtype != np.uint8:
            raise ValueError(f"the camera gives {dtype} frames; task observation.images[0] records uint8")

    def _observe(self, state: State, step: int, image: Optional[np.ndarray] = None) -> Observation:
        values = self.mapper(state.positions, state.extras).astype(np.float32)
        return Observation(step, step * self.period, self.task.state.names, values, image)

    def _hold(self, state: Optional[State]) -> None:
        """After an aborted episode: keep the robot where it is (one hold command)."""
        try:
            fr = self.safety.hold(None if state is None else state.positions)
            if fr.command is not None:
                if self.config.lockstep:
                    self._step(fr.command)
                else:
                    self.robot.send_command(fr.command)
        except Exception:
            pass

    def _wait_fresh(self, watch: LinkWatch) -> Optional[State]:
        """Poll for a fresh State for up to link_grace_s (None: none came, or the operator stopped)."""
        deadline = time.monotonic() + self.config.link_grace_s
        while not self._stop and time.monotonic() < deadline:
            time.sleep(0.005)
            state = self.robot.latest_state()
            if watch.check(self.robot.healthy, state):
                return state
        return None

    def _wait_until(self, deadline: float) -> None:
        while not self._stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, self.config.wait_slice_s))


def _finite_or_nan(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def limits_summary(limits: SafetyLimits) -> str:
    """One line per joint: the box and step the recording enforces."""
    out = []
    for i, name in enumerate(limits.names):
        out.append(f"{name} [{limits.lower[i]:g}, {limits.upper[i]:g}] step {limits.max_step[i]:g}")
    return "; ".join(out)


__all__ = ["ENDED_OK", "EpisodeResult", "RecordConfig", "Recorder", "limits_summary"]
