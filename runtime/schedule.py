"""Action scheduling: planning in a worker thread, and plans placed on the tick grid they are for.

A plan made from the observation at tick ``s`` is a chunk [Tp, A] whose row ``To-1+j`` is meant for
tick ``s+j`` (row To-1 is "now": runtime.chunks). It takes over from its handover tick ``h`` (>= s): rows for
ticks >= h replace whatever an earlier plan left there. The Ta rows from h on are the plan's
*designated* actions; later rows are its tail, used only if the next plan is late. An action whose
tick has passed when it would be used is dropped, and counted when it was designated.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from runtime.chunks import now_row


@dataclass
class Slot:
    action: np.ndarray
    plan_id: int
    designated: bool


class ActionSchedule:
    """Planned actions keyed by absolute tick index."""

    def __init__(self, obs_horizon: int, action_horizon: int, use_tail: bool = True) -> None:
        self.obs_horizon = obs_horizon
        self.action_horizon = action_horizon
        self.use_tail = use_tail
        self._slots: dict[int, Slot] = {}
        self.dropped = 0

    def clear(self) -> None:
        self._slots.clear()

    def __len__(self) -> int:
        return len(self._slots)

    def place(self, chunk: np.ndarray, obs_tick: int, handover: int, plan_id: int, now_tick: int) -> int:
        """Put a plan on the schedule; `now_tick` is the first tick not yet executed.
        Returns how many designated actions were already late (dropped)."""
        start = now_row(self.obs_horizon)
        last_designated = handover + self.action_horizon - 1
        late = 0
        for j in range(chunk.shape[0] - start):
            tick = obs_tick + j
            if tick < handover:
                continue
            designated = tick <= last_designated
            if not designated and not self.use_tail:
                break
            if tick < now_tick:
                late += designated
                continue
            self._slots[tick] = Slot(chunk[start + j], plan_id, designated)
        # An older plan's slots beyond this plan's reach are superseded too.
        for tick in [t for t, s in self._slots.items() if t >= handover and s.plan_id != plan_id]:
            del self._slots[tick]
        self.dropped += late
        return late

    def take(self, tick: int) -> Optional[Slot]:
        """The slot for `tick` (None if nothing is planned); earlier slots are discarded, and the
        designated ones among them counted as dropped (their ticks were skipped)."""
        for t in [t for t in self._slots if t < tick]:
            if self._slots.pop(t).designated:
                self.dropped += 1
        return self._slots.pop(tick, None)


# ----------------------------------------------------------------------------- planning worker
@dataclass
class PlanRequest:
    plan_id: int
    generation: int
    obs_tick: int
    handover: int
    obs_state: np.ndarray
    obs_image: Optional[np.ndarray] = None
    submitted: float = 0.0


@dataclass
class PlanResult:
    request: PlanRequest
    chunk: Optional[np.ndarray]      # None when planning failed
    latency_s: float                 # submit -> result ready (queueing included)
    compute_s: float                 # inside policy.plan
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)


PlanFn = Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]


class Planner:
    """Runs `plan_fn(obs_state, obs_image)` on one worker thread, one request at a time.

    onnxruntime releases the GIL while it computes, so the tick thread keeps its deadlines. The
    worker lowers its own scheduling priority (Linux: per-thread nice) so that, when the CPUs are
    busy, the tick thread is preferred. Every call into the policy (plan, reset) happens on the
    worker, so the policy is never used from two threads.
    """

    def __init__(self, plan_fn: PlanFn, reset_fn: Optional[Callable[[], None]] = None, nice: int = 10,
                 info_fn: Optional[Callable[[], dict]] = None) -> None:
        self.plan_fn = plan_fn
        self.reset_fn = reset_fn
        self.info_fn = info_fn
        self.nice = nice
        self.generation = 0
        self._cond = threading.Condition()
        self._job: Optional[Any] = None          # PlanRequest or the string "reset"
        self._busy = False
        self._results: deque[PlanResult] = deque()
        self._stop = False
        self._reset_done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="planner", daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._job is not None

    def submit(self, req: PlanRequest) -> bool:
        """Queue a plan; False (nothing queued) if the worker is still busy with the previous one."""
        with self._cond:
            if self._busy or self._job is not None:
                return False
            req.submitted = time.perf_counter()
            self._job = req
            self._cond.notify_all()
            return True

    def poll(self) -> Optional[PlanResult]:
        """The oldest finished result of the current generation, if any (never blocks)."""
        with self._cond:
            while self._results:
                res = self._results.popleft()
                if res.request.generation == self.generation:
                    return res
            return None

    def wait(self, timeout: Optional[float] = None) -> Optional[PlanResult]:
        """Block until a current-generation result is ready (lock-step and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                while self._results:
                    res = self._results.popleft()
                    if res.request.generation == self.generation:
                        return res
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def invalidate(self) -> None:
        """Results of requests made before now will be ignored (episode end, link loss)."""
        with self._cond:
            self.generation += 1
            self._results.clear()

    def wait_idle(self) -> None:
        """Block until no plan is queued or running."""
        with self._cond:
            while self._busy or self._job is not None:
                self._cond.wait()

    def reset_policy(self, timeout: float = 30.0) -> None:
        """Run reset_fn on the worker once it is idle (waits for a running plan to finish)."""
        if self.reset_fn is None:
            return
        with self._cond:
            while self._busy or self._job is not None:
                self._cond.wait()
            self._reset_done.clear()
            self._job = "reset"
            self._cond.notify_all()
        if not self._reset_done.wait(timeout):
            raise TimeoutError("the planner did not reset the policy in time")

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    # ------------------------------------------------------------------ worker
    def _lower_priority(self) -> None:
        if self.nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:  # on Linux PRIO_PROCESS with a thread id sets that thread's nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except OSError:
            pass

    def _run(self) -> None:
        self._lower_priority()
        while True:
            with self._cond:
                while self._job is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._job = self._job, None
                self._busy = True
            if job == "reset":
                try:
                    self.reset_fn()  # type: ignore[misc]
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
                    self._reset_done.set()
                continue
            result = self._plan(job)
            with self._cond:
                self._busy = False
                self._results.append(result)
                self._cond.notify_all()

    def _plan(self, req: PlanRequest) -> PlanResult:
        t0 = time.perf_counter()
        chunk, error, info = None, "", {}
        try:
            chunk = np.asarray(self.plan_fn(req.obs_state, req.obs_image), dtype=np.float32)
            if self.info_fn is not None:
                info = dict(self.info_fn() or {})
        except Exception as exc:  # a failed plan is reported, never executed
            error = f"{type(exc).__name__}: {exc}"
        t1 = time.perf_counter()
        return PlanResult(req, chunk, t1 - req.submitted, t1 - t0, error, info)


def lead_ticks(latencies_s: "deque[float] | list[float]", period_s: float, max_lead: int, margin_s: float = 0.0,
               fixed: Optional[int] = None) -> int:
    """How many ticks before its handover a plan must be requested so it is ready in time:
    ceil((recent worst latency + margin) / period), at least 1, at most `max_lead`."""
    if fixed is not None:
        return max(0, min(fixed, max_lead))
    if not latencies_s:
        return min(1, max_lead)
    worst = max(latencies_s) + margin_s
    return max(1, min(max_lead, int(math.ceil(worst / period_s))))
