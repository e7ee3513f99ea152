"""One lock-step run of a package on a robot, through the real path (runtime.loop.ControlLoop, the
robot registry, the device protocol), captured as a runtime.hil_trace.Trace.

The loop itself is not changed: the policy is wrapped in a recorder that sees every plan call (its
observations and runtime.policy.Policy.last_plan_info), and the loop's own StepLog gives the rows.
A camera package sees the camera RunSettings.camera names: "simulated" (the default: the emulated
Push-T plant drawn from each lock-step State, deterministic because the plant only moves when
stepped) or "synthetic" (a gradient whose frame at tick k depends only on k, flagged synthetic in
the summary); the trace keeps a digest of each plan's frames, not the frames.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runtime.hil_trace import TRACE_FORMAT, TRACE_VERSION, Trace, this_platform


class RunError(RuntimeError):
    """The run could not be made or did not complete (one-line message)."""


@dataclass
class RunSettings:
    """What a recorded run used; a replay uses the same (stored in the trace's meta.settings)."""
    precision: Optional[str] = None   # None: the package's default (int8 when it has it)
    seed: int = 0                     # episode i: plant and policy seed seed + i
    episodes: int = 1
    max_steps: int = 64
    candidates: Optional[int] = None  # None: the package's
    temporal_consistency: Optional[bool] = None
    tc_reset_after: Optional[int] = None
    threads: int = 1
    robot: str = "emulator-lockstep"  # a --robot spec (runtime.robots)
    robot_options: dict[str, str] = field(default_factory=dict)  # --robot.FIELD values, as text
    camera: str = "simulated"         # camera packages: simulated | synthetic (CAMERAS)

    def check(self) -> None:
        if not 1 <= self.episodes <= 1000 or not 1 <= self.max_steps <= 10_000:
            raise RunError(f"episodes must be in 1..1000 and max_steps in 1..10000, got {self.episodes}, "
                           f"{self.max_steps}")
        if not 1 <= self.threads <= 64:
            raise RunError(f"threads must be in 1..64, got {self.threads}")
        if self.camera not in CAMERAS:
            raise RunError(f"camera must be one of {', '.join(CAMERAS)}, got {self.camera!r}")


CAMERAS = ("simulated", "synthetic")


class _DeterministicCamera:
    """A FrameSource whose frame at tick k depends only on k (the paced synthetic camera of imle-run does not)."""
    label = "synthetic (deterministic, one frame per tick)"
    synthetic = True

    def __init__(self, shape_chw: tuple[int, ...]) -> None:
        from runtime.sensors import StandInCamera

        c, h, w = shape_chw
        self._cam = StandInCamera((h, w, c), fps=0.0)

    def latest(self) -> np.ndarray:
        return self._cam.read()


class _PlanRecorder:
    """Wraps a runtime.Policy for the loop; records each plan call (the row it was made at is the
    number of rows the loop's StepLog held at the time: the loop logs a step after planning it)."""

    def __init__(self, policy: Any) -> None:
        self._policy = policy
        self.loop: Any = None
        self.plans: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)

    def reset(self, seed: Optional[int] = None) -> None:
        self._policy.reset(seed)

    def plan(self, obs_state: np.ndarray, obs_image: Optional[np.ndarray] = None) -> np.ndarray:
        rec: dict[str, Any] = {"row": len(self.loop.log.rows), "obs_state": np.array(obs_state, np.float32),
                               "image_sha": "" if obs_image is None else
                               hashlib.sha256(np.ascontiguousarray(obs_image).tobytes()).hexdigest(),
                               "ok": False, "selected": -1, "distance": None, "chunk": None}
        self.plans.append(rec)
        chunk = self._policy.plan(obs_state, obs_image)  # a PlanError propagates: the loop holds
        info = self._policy.last_plan_info
        rec.update(ok=True, selected=int(info.get("selected", -1)), distance=info.get("distance"),
                   chunk=np.array(chunk, np.float32))
        return chunk


def _manifest_sha256(package: Path) -> str:
    from runtime.signing import read_manifest_bytes

    return hashlib.sha256(read_manifest_bytes(package)).hexdigest()


def record_run(package: str | Path, settings: RunSettings) -> Trace:
    """Run ``settings.episodes`` lock-step episodes and return their trace. RunError (one line) when
    the package, the robot or the run fails, or the robot cannot run in lock-step."""
    settings.check()
    package = Path(package)
    from firmware_bridge.robot import LinkError
    from runtime import robots
    from runtime.loop import ControlLoop, LoopConfig, LoopError
    from runtime.package import PackageError
    from runtime.policy import Policy

    try:
        sha = _manifest_sha256(package)
        policy = Policy(package, precision=settings.precision, candidates=settings.candidates,
                        threads=settings.threads, seed=settings.seed,
                        temporal_consistency=settings.temporal_consistency, tc_reset_after=settings.tc_reset_after)
    except (PackageError, ValueError, OSError) as exc:
        raise RunError(f"cannot load {package}: {_one_line(exc)}") from None
    try:
        robot_settings, _ = robots.build_settings(settings.robot, settings.robot_options)
        robot_settings.check()
        handle = robots.make_robot(robot_settings, period_s=float(policy.manifest.control.period_s),
                                   package=str(package))
    except (robots.RobotSpecError, LinkError) as exc:
        raise RunError(str(exc)) from None
    loop = None
    camera = None
    try:
        if not handle.lockstep:
            raise RunError(f"robot {handle.spec} does not run in lock-step; a trace needs a lock-step robot "
                           f"(emulator-lockstep, or a device that announces LOCKSTEP)")
        recorder = _PlanRecorder(policy)
        shape = policy.manifest.obs.image_shape
        camera = _open_camera(settings.camera, tuple(shape), handle) if shape is not None else None
        config = LoopConfig(episodes=settings.episodes, base_seed=settings.seed, max_steps=settings.max_steps,
                            lockstep=True, gc_freeze=False, switch_interval_s=None)
        try:
            loop = ControlLoop(recorder, handle.robot, config, handle.capabilities, camera)
        except (LoopError, ValueError) as exc:
            raise RunError(str(exc)) from None
        recorder.loop = loop
        stats = loop.run()
        return _trace(package, sha, policy, settings, handle, loop, recorder, stats)
    finally:
        if loop is not None:
            loop.close()
        if camera is not None and hasattr(camera, "close"):
            camera.close()  # before the robot: the simulated camera reads its States
        handle.close()


def _open_camera(name: str, shape_chw: tuple[int, ...], handle: Any) -> Any:
    if name == "synthetic":
        return _DeterministicCamera(shape_chw)
    from runtime.cameras import CameraContext, CameraSpecError, SimulatedConfig, open_stream
    c, h, w = shape_chw
    try:
        return open_stream(SimulatedConfig(), CameraContext((h, w, c), None, True, handle.robot, handle.capabilities))
    except CameraSpecError as exc:
        raise RunError(f"camera {name}: {exc}") from None


def _trace(package: Path, sha: str, policy: Any, settings: RunSettings, handle: Any, loop: Any,
           recorder: _PlanRecorder, stats: Any) -> Trace:
    caps = handle.capabilities
    rows = loop.log.rows
    nj, ne, na = caps.joint_count, caps.extra_count, policy.action_dim

    def vec(v: Optional[np.ndarray], n: int) -> np.ndarray:
        return np.zeros(n, np.float32) if v is None else np.asarray(v, np.float32).reshape(n)

    steps = {
        "episode": np.array([r.episode for r in rows], np.int32), "step": np.array([r.step for r in rows], np.int32),
        "source": np.array([r.source for r in rows], dtype="<U16"),
        "plan_id": np.array([r.plan_id for r in rows], np.int32),
        "positions": np.array([vec(r.positions, nj) for r in rows], np.float32).reshape(len(rows), nj),
        "extras": np.array([vec(r.extras, ne) for r in rows], np.float32).reshape(len(rows), ne),
        "command": np.array([vec(r.command, nj) for r in rows], np.float32).reshape(len(rows), nj),
        "has_command": np.array([r.command is not None for r in rows], bool),
        "action": np.array([vec(r.action, na) for r in rows], np.float32).reshape(len(rows), na),
        "has_action": np.array([r.action is not None for r in rows], bool),
    }
    to, ds, tp = policy.obs_horizon, policy.state_dim, policy.pred_horizon
    ps = recorder.plans
    dist = [p["distance"] for p in ps]
    plans = {
        "row": np.array([p["row"] for p in ps], np.int32), "ok": np.array([p["ok"] for p in ps], bool),
        "obs_state": np.array([p["obs_state"] for p in ps], np.float32).reshape(len(ps), to, ds),
        "image_sha": np.array([p["image_sha"] for p in ps], dtype="<U64"),
        "selected": np.array([p["selected"] for p in ps], np.int32),
        "distance": np.array([0.0 if d is None else d for d in dist], np.float64),
        "has_distance": np.array([d is not None for d in dist], bool),
        "chunk": np.array([vec(p["chunk"], tp * na).reshape(tp, na) for p in ps], np.float32).reshape(len(ps), tp, na),
    }
    names = {"joints": list(caps.joint_names), "extras": list(caps.extra_names),
             "actions": list(loop.shape.action_names)}
    episodes = [{"seed": e.seed, "steps": e.steps, "success": e.success, "aborted": e.aborted,
                 "max_progress": None if math.isnan(e.max_progress) else e.max_progress} for e in stats.episodes]
    meta = {
        "format": TRACE_FORMAT, "version": TRACE_VERSION, "package": policy.manifest.name, "manifest_sha256": sha,
        "precision": policy.precision,
        "settings": {"seed": settings.seed, "episodes": settings.episodes, "max_steps": settings.max_steps,
                     "candidates": policy.candidates, "temporal_consistency": policy.temporal_consistency,
                     "tc_reset_after": policy.tc_reset_after, "threads": settings.threads,
                     "camera": settings.camera},
        "robot": {"spec": settings.robot, "options": dict(settings.robot_options), "label": handle.spec,
                  "firmware": caps.firmware_version},
        "platform": this_platform(), "names": names, "episodes": episodes,
        "ranges": _ranges(policy.manifest, caps),
        "outcome": {"exit_code": stats.exit_code(), "stop_reason": stats.stop_reason or ""},
    }
    return Trace(meta, steps, plans)


def _ranges(m: Any, caps: Any) -> dict[str, list[float]]:
    """Per-element spans a cross-platform comparison measures errors against (runtime.hil_compare)."""
    def span(lo: Any, hi: Any) -> list[float]:
        if lo is None or hi is None:
            return []
        spans = [float(h) - float(lo_) for lo_, h in zip(lo, hi)]
        return [d if math.isfinite(d) else 0.0 for d in spans]  # 0: no known range (compared in absolute units)

    return {"joints": span(caps.lower, caps.upper), "actions": span(m.action.low, m.action.high),
            "obs_state": span(m.normalization.state.min, m.normalization.state.max)}


def settings_of(trace: Trace) -> RunSettings:
    """The settings to replay a trace with (RunError when the trace's are unusable)."""
    s, r = trace.meta["settings"], trace.meta["robot"]
    try:
        opts = r.get("options", {})
        if not isinstance(opts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items()):
            raise TypeError("robot.options must map names to text")
        out = RunSettings(precision=trace.meta["precision"], seed=_int(s["seed"]), episodes=_int(s["episodes"]),
                          max_steps=_int(s["max_steps"]), candidates=_int(s["candidates"]),
                          temporal_consistency=bool(s["temporal_consistency"]),
                          tc_reset_after=_int(s["tc_reset_after"]), threads=_int(s.get("threads", 1)),
                          robot=str(r["spec"]), robot_options=dict(opts), camera=str(s.get("camera", "simulated")))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"trace field 'meta.settings' is unusable: {_one_line(exc)}") from None
    out.check()
    return out


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{str(v)[:20]!r} is not an integer")
    return v


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:300]
