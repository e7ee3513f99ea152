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
repeating the first; plan every Ta steps; execute chunk[To-1 : To-1+Ta]).

    stats = run_episodes(policy, robot, LoopConfig(episodes=5, lockstep=True))
"""
from __future__ import annotations

import gc
import inspect
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from runtime.safety import FilterResult, LinkWatch, SafetyFilter, SafetyLimits
from runtime.schedule import ActionSchedule, Planner, PlanRequest, PlanResult, lead_ticks
from runtime.sensors import ObservationHistory, StateMapper
from runtime.stats import EpisodeStats, RunStats, StepLog, StepRecord


@dataclass
class FaultInjection:
    """Host-side faults for the hardware-in-the-loop tests (all off by default)."""
    stall_episode: int = 0
    stall_at_step: Optional[int] = None  # after sending this step's command, the tick thread sleeps...
    stall_s: float = 0.5                 # ...this long (a host hiccup)
    nan_plan: Optional[int] = None       # this plan (0-based over the run) comes back all NaN


@dataclass
class LoopConfig:
    episodes: int = 1
    base_seed: int = 0                    # episode i resets the plant with seed base_seed + i
    max_steps: int = 300                  # commands per episode (Push-T: 300)
    period_s: Optional[float] = None      # None: the package's control.period_s
    lockstep: bool = False
    success_coverage: Optional[float] = 0.95  # end an episode when the "coverage" extra reaches it
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
    faults: FaultInjection = field(default_factory=FaultInjection)


@dataclass
class LiveStatus:
    """What the status line shows; written by the loop, read by another thread."""
    episode: int = 0
    step: int = 0
    coverage: float = math.nan
    jitter_ms: float = math.nan       # worst jitter over the last second
    plan_ms: float = math.nan         # latest plan latency
    held: int = 0
    dropped: int = 0
    link_ok: bool = True
    done: bool = False


@dataclass
class PolicyShape:
    """The parts of a runtime.Policy (and its manifest) the loop relies on."""
    obs_horizon: int
    pred_horizon: int
    action_horizon: int
    action_dim: int
    state_dim: int
    period_s: float
    state_names: list[str]
    action_names: list[str]
    action_low: Optional[list[float]]
    action_high: Optional[list[float]]
    image_shape: Optional[tuple[int, ...]]  # [3, H, W] per frame

    @classmethod
    def of(cls, policy: Any) -> "PolicyShape":
        m = policy.manifest
        obs, act = m.obs, m.action
        image = getattr(obs, "image_shape", None)
        return cls(policy.obs_horizon, policy.pred_horizon, policy.action_horizon, policy.action_dim,
                   policy.state_dim, float(m.control.period_s), list(getattr(obs, "state_names", []) or []),
                   list(getattr(act, "names", []) or [f"a{i}" for i in range(policy.action_dim)]),
                   getattr(act, "low", None), getattr(act, "high", None), tuple(image) if image else None)


class LoopError(RuntimeError):
    """The loop cannot run with this policy/robot combination (one-line message)."""


class ControlLoop:
    """Drives one robot with one policy for a number of episodes. Call run() once."""

    def __init__(self, policy: Any, robot: Any, config: LoopConfig, capabilities: Any = None,
                 camera: Any = None, policy_factory: Optional[Callable[[int], Any]] = None) -> None:
        self.policy = policy
        self.policy_factory = policy_factory
        self.robot = robot
        self.config = config
        self.shape = PolicyShape.of(policy)
        self.caps = capabilities if capabilities is not None else getattr(robot, "capabilities", None)
        if self.caps is None:
            raise LoopError("the robot is not connected (no capabilities)")
        self.period = float(config.period_s or self.shape.period_s)
        if self.period <= 0:
            raise LoopError(f"control period must be positive, got {self.period}")
        sh = self.shape
        if self.caps.joint_count != sh.action_dim:
            raise LoopError(f"the policy commands {sh.action_dim} joints but the robot has {self.caps.joint_count} "
                            f"({', '.join(self.caps.joint_names)})")
        self.mapper = StateMapper(sh.state_dim, sh.state_names, self.caps.joint_names, self.caps.extra_names)
        limits = SafetyLimits.build({"low": sh.action_low, "high": sh.action_high}, sh.action_dim,
                                    self.caps.lower, self.caps.upper, self.caps.max_velocity, self.period)
        self.safety = SafetyFilter(limits)
        self.camera = camera
        if sh.image_shape is not None and camera is None:
            raise LoopError("this policy sees a camera: give the loop a camera (runtime.sensors)")
        frame_shape = (sh.image_shape[1], sh.image_shape[2], sh.image_shape[0]) if sh.image_shape else None
        self.history = ObservationHistory(sh.obs_horizon, sh.state_dim, frame_shape)
        self.schedule = ActionSchedule(sh.obs_horizon, sh.action_horizon, config.use_tail)
        self.watch = LinkWatch(config.stale_timeout_s)
        self.stats = RunStats(mode="lockstep" if config.lockstep else "realtime", period_s=self.period)
        self.log = StepLog(config.log_steps)
        self.status = LiveStatus()
        self._estop_requested = False
        self._stop_requested = False
        self._plans_made = 0
        self._warmed = False
        self._latencies: deque[float] = deque(maxlen=8)
        self._run_t0 = 0.0
        self._recent_jitter: deque[float] = deque(maxlen=max(1, int(round(1.0 / self.period))))
        self.planner: Optional[Planner] = None
        if not config.lockstep:
            self.planner = Planner(self._plan_fn, lambda: self.policy.reset(), nice=config.planner_nice,
                                   info_fn=lambda: getattr(self.policy, "last_plan_info", {}))

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
        evaluation does: policy.reset(seed=...) when the Policy takes one, else a fresh Policy from
        `policy_factory`. Without either, the stream simply continues (noted in the settings).
        Call only while the planner is idle."""
        if not self.config.seed_policy_per_episode:
            return
        if getattr(self.policy, "seed", None) == seed and self._plans_made == 0 and not self._warmed:
            return  # a fresh policy made with this very seed
        try:
            takes_seed = "seed" in inspect.signature(self.policy.reset).parameters
        except (TypeError, ValueError):
            takes_seed = False
        if takes_seed:
            self.policy.reset(seed=seed)
            self.stats.settings["policy_seeding"] = "reset(seed)"
        elif self.policy_factory is not None:
            self.policy = self.policy_factory(seed)
            self.stats.settings["policy_seeding"] = "new Policy per episode"
        else:
            self.stats.settings["policy_seeding"] = "one stream for the run (no reset(seed), no factory)"

    def _images_for_policy(self) -> Optional[np.ndarray]:
        imgs = self.history.images()
        return None if imgs is None else np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))  # [To,H,W,3]->[To,3,H,W]

    def _frame(self) -> Optional[np.ndarray]:
        return None if self.camera is None else self.camera.latest()

    # ------------------------------------------------------------------ robot helpers
    def _reset_plant(self, seed: int) -> Any:
        reset = getattr(self.robot, "reset_plant", None)
        caps_flags = int(getattr(self.caps, "flags", 0))
        if reset is not None and caps_flags & 0x02:  # CapabilityFlags.SIMULATED
            return reset(seed, timeout=self.config.reset_timeout_s)
        return self.robot.latest_state()  # hardware: the episode starts where the robot is

    def _step_lockstep(self, targets: np.ndarray) -> Any:
        step = getattr(self.robot, "step", None)
        if step is not None:
            return step(targets, timeout=self.config.step_timeout_s)
        seq = self.robot.send_command(targets)
        if seq is None:
            raise ConnectionError("could not send the command")
        return self.robot.wait_state(after_seq=seq, timeout=self.config.step_timeout_s)

    def _aborted(self, ep: EpisodeStats) -> bool:
        """An e-stop or stop was requested (by a signal handler or the CLI): end the episode."""
        if self._estop_requested:
            self._engage_estop()
            ep.aborted = "estop"
        elif self._stop_requested:
            ep.aborted = "stopped"
        return bool(ep.aborted)

    def _engage_estop(self) -> None:
        self.safety.engage_estop()
        self.stats.counters.estops += 1
        try:
            self.robot.estop(True)
        except Exception:  # the link may be down; the device watchdog holds in that case
            pass

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
        restore = self._enter_realtime()
        t_start = time.monotonic()
        self._run_t0 = t_start
        try:
            for ep in range(self.config.episodes):
                if self._estop_requested or self._stop_requested or self.safety.estopped:
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
        finally:
            if self._estop_requested and not self.safety.estopped:  # requested between episodes or before any
                self._engage_estop()
            self._leave_realtime(restore)
            self.stats.wall_s = time.monotonic() - t_start
            self.stats.interrupted = self._estop_requested or self._stop_requested
            c = self.stats.counters
            c.nan_blocked, c.clipped, c.rate_limited = (self.safety.counts.nan_blocked, self.safety.counts.clipped,
                                                        self.safety.counts.rate_limited)
            c.dropped_actions = self.schedule.dropped
            c.link_loss_events, c.link_recoveries = self.watch.losses, self.watch.recoveries
            try:
                self.stats.link = _link_stats(self.robot)
            except Exception:
                self.stats.link = {}
            self.stats.step_log = self.log
            self.status.done = True
        return self.stats

    # ------------------------------------------------------------------ shared tick pieces
    def _observe(self, state: Any, ep: EpisodeStats) -> tuple[bool, float]:
        """Push the State into the history; returns (task succeeded, coverage)."""
        self.history.push(self.mapper(state.positions, state.extras), self._frame())
        cov = self.mapper.progress(state.extras)
        if cov is None:
            return False, math.nan
        ep.final_coverage = cov
        ep.max_coverage = cov if math.isnan(ep.max_coverage) else max(ep.max_coverage, cov)
        self.status.coverage = cov
        thr = self.config.success_coverage
        return thr is not None and cov >= thr, cov

    def _record(self, ep: int, step: int, tick: int, deadline: float, start: float, source: str, plan_id: int,
                action: Optional[np.ndarray], fr: Optional[FilterResult], state: Any) -> None:
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
        start = sh.obs_horizon - 1
        step = 0
        while True:
            if self._aborted(ep):
                break
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
                    actions = chunk[start:start + sh.action_horizon]
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
            fr = self.safety.filter(action, state.positions)
            if action is None or fr.held:
                c.held_ticks += 1
            self._record(ep.index, step, step, math.nan, math.nan, "plan" if action is not None else "hold",
                         plan_id, action, fr, state)
            if fr.command is None:  # e-stop or no reference at all: nothing can be sent
                ep.aborted = fr.reason
                break
            try:
                state = self._step_lockstep(fr.command)
            except Exception as exc:  # link trouble: wait for it to come back, then go on from its State
                self.watch.check(False, None)
                state = self._wait_link(ep)
                if state is None:
                    ep.aborted = f"link: {exc}"
                    break
                self.watch.check(True, state, state.rx_time)
            c.ticks += 1
            self.stats.tick_work_s.append(time.perf_counter() - t_tick)
            step += 1
            self.status.step = step
        ep.steps = step
        ep.held_ticks = c.held_ticks - held0
        ep.dropped_actions = self.schedule.dropped - dropped0
        ep.wall_s = time.monotonic() - t_ep

    def _wait_link(self, ep: EpisodeStats) -> Any:
        """Block (lock-step only) until the link is healthy again; its latest State, or None on give-up."""
        give_up = time.monotonic() + self.config.link_give_up_s
        while time.monotonic() < give_up and not self._estop_requested:
            st = self.robot.latest_state()
            if self.robot.healthy and st is not None:
                return st
            time.sleep(0.01)
        return None

    # ------------------------------------------------------------------ real-time episode
    def _wait_until(self, deadline: float) -> float:
        spin = self.config.spin_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= spin:
                break
            time.sleep(remaining - spin)
        now = time.monotonic()
        while now < deadline:  # the last `spin` seconds: sleep's wake-up latency is not precise enough
            now = time.monotonic()
        return now

    def _warm_up(self, state: Any, plans: int = 2) -> None:
        """Plan a couple of times before the first tick (the planner thread is idle): onnxruntime's
        first runs are slow, and the measured latency sets the first plans' lead."""
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
                    ep.aborted = "link lost"
                    break
                k += 1
                continue
            if was_lost:  # recovered: a fresh history and a fresh plan, rate limits from where the robot is
                self.history.reset()
                self.safety.reset()
                self.status.link_ok = True

            success, _ = self._observe(state, ep)
            if success:
                ep.success = True
                break

            while (res := self.planner.poll()) is not None:
                self._accept(res, k)
            slot = self.schedule.take(k)
            action = slot.action if slot is not None else None
            fr = self.safety.filter(action, state.positions)
            if fr.command is not None:
                if self.robot.send_command(fr.command) is None:
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


def _set_fifo(tid: int, priority: int) -> bool:
    try:  # Linux: a thread id is accepted where a pid is
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except OSError:
        return False


def _link_stats(robot: Any) -> dict[str, Any]:
    st = robot.stats
    d = asdict(st) if hasattr(st, "__dataclass_fields__") else dict(st)
    d.pop("last_fault", None)
    lf = getattr(st, "last_fault", None)
    if lf is not None:
        d["last_fault"] = f"{getattr(lf.code, 'name', lf.code)}: {lf.text}"
    return d


def run_episodes(policy: Any, robot: Any, config: LoopConfig, capabilities: Any = None,
                 camera: Any = None, on_start: Optional[Callable[[ControlLoop], None]] = None,
                 policy_factory: Optional[Callable[[int], Any]] = None) -> RunStats:
    """Run `config.episodes` episodes of `policy` on a connected `robot`; the run's statistics.
    `on_start(loop)` is called before the first tick (to hook up e-stop handling or a status line);
    `policy_factory(seed)` makes the policy of each episode when Policy.reset takes no seed."""
    loop = ControlLoop(policy, robot, config, capabilities, camera, policy_factory)
    try:
        if on_start is not None:
            on_start(loop)
        return loop.run()
    finally:
        loop.close()
