"""imle-eval-arm: closed-loop evaluation of a joint-space arm package through the runtime's ControlLoop.

    imle-eval-arm exported_models/franka-reach-around --episodes 50          # emulator, lock-step
    imle-eval-arm PKG --robot emulator --episodes 50 --json out.json         # emulator, real time
    imle-eval-arm PKG --robot franka:127.0.0.1 --episodes 10                # franka-sim, limits enforced

Each episode starts the simulated arm at the task's start for its seed (trainer.demos.franka_reach:
start_for_seed, seeds from EVAL_SEED_BASE: starts the demonstrations never used), runs the package
through runtime.loop.ControlLoop (the same safety filter, limits and device checks as imle-run), and
judges the measured joint positions with trainer.evaluate.arm_success.judge. Reported: success rate,
each mode's share of the successes, and what the runtime and the device counted (commands clipped or
rate-limited by the safety filter, device faults and refused commands, bad states, e-stops).

Exit status: 0 evaluated, 2 usage or load error, 4 the run stopped early.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from trainer.demos.franka_reach import EVAL_SEED_BASE, REACH_AROUND, ReachAroundGeometry, start_for_seed
from trainer.evaluate.arm_success import judge

PROG = "imle-eval-arm"


class StartsRobot:
    """A simulated robot whose seeded resets start at `start_fn(seed)` (the plant's Reset carries the state);
    everything else is the wrapped robot's."""

    def __init__(self, robot: Any, start_fn: Callable[[int], np.ndarray]) -> None:
        self._robot = robot
        self._start_fn = start_fn

    def reset_plant(self, seed: int, initial_state: Optional[np.ndarray] = None, timeout: float = 1.0,
                    retries: int = 3) -> Any:
        start = self._start_fn(seed) if initial_state is None else initial_state
        return self._robot.reset_plant(seed, start, timeout=timeout, retries=retries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._robot, name)


def episode_positions(step_log: Any, episode: int) -> np.ndarray:
    """[T, joints] measured positions of one episode, in the robot's joint order."""
    rows = step_log.episode_rows(episode)
    return np.stack([r.positions for r in rows]) if rows else np.zeros((0, 0), np.float32)


def plan_timing(latencies_s: list[float], counters: Any, period_s: float) -> dict[str, Any]:
    """How long the package's plans took (ms) against the control period, and what the loop had to do
    about late plans (ticks that ran the previous plan's tail, actions dropped, plans due while one ran)."""
    lat = np.asarray(latencies_s, np.float64) * 1e3
    pct = {f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 90, 99)} if lat.size else {}
    return {"plan_ms": {**pct, "max": round(float(lat.max()), 2) if lat.size else None, "plans": int(lat.size)},
            "period_ms": round(period_s * 1e3, 3),
            "plans_over_period": int(np.sum(lat > period_s * 1e3)),
            "missed_deadlines": counters.missed_deadlines, "skipped_ticks": counters.skipped_ticks,
            "tail_ticks": counters.tail_ticks, "dropped_actions": counters.dropped_actions,
            "plan_overruns": counters.plan_overruns}


def summarise(verdicts: list, counters: Any, stats: Any) -> dict[str, Any]:
    """The report: success rate, mode shares of the successes, safety-filter and device counts."""
    n = len(verdicts)
    wins = [v for v in verdicts if v.success]
    modes = Counter(v.mode for v in wins)
    return {
        "episodes": n,
        "success_rate": len(wins) / n if n else 0.0,
        "successes": len(wins),
        "mode_share": {m: modes.get(m, 0) / len(wins) if wins else 0.0 for m in ("over", "under", "none")},
        "entered_avoid_box": sum(v.entered_step is not None for v in verdicts),
        "never_reached": sum(v.reached_step is None for v in verdicts),
        "median_steps_to_goal": float(np.median([v.reached_step for v in wins])) if wins else None,
        "clipped": counters.clipped,
        "rate_limited": counters.rate_limited,
        "device_faults": counters.device_faults,
        "device_fault_codes": dict(stats.device.get("faults", {})) if stats is not None else {},
        "refused_commands": counters.refused_commands,
        "bad_states": counters.bad_states,
        "estops": counters.estops,
        "nan_blocked": counters.nan_blocked,
        "stop_reason": stats.stop_reason if stats is not None else "",
    }


def _connect(robot: str, period: float, package: str) -> Any:
    from runtime import robots
    if robot.startswith("franka:"):  # franka-sim on a loopback address: libfranka's realtime check off
        return robots.FrankaConfig(host=robot.split(":", 1)[1], realtime="ignore").connect(
            robots.ConnectContext(period_s=period, package=package))
    return robots.make_robot(robot, period_s=period, package=package)


def drive_to(robot: Any, target: np.ndarray, period: float, tolerance: float = 0.005, timeout_s: float = 20.0) -> bool:
    """Hardware (franka-sim): stream `target` until every joint is within `tolerance` (the bridge's rate
    limiter shapes the motion). True when there; the arm then holds it."""
    import time
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if robot.send_command(np.asarray(target, np.float32)) is None:
            return False
        time.sleep(period)
        st = robot.latest_state()
        if st is not None and np.max(np.abs(np.asarray(st.positions, np.float64) - target)) <= tolerance:
            return True
    return False


def _run(policy: Any, robot: Any, caps: Any, config: Any) -> Any:
    from runtime.loop import ControlLoop
    loop = ControlLoop(policy, robot, config, caps)
    try:
        return loop.run()
    finally:
        loop.close()


def evaluate_arm(package: str | Path, episodes: int = 50, seed: int = EVAL_SEED_BASE, robot: str = "emulator-lockstep",
                 precision: Optional[str] = None, candidates: Optional[int] = None, temporal_consistency: bool = True,
                 max_steps: int = 120, geom: ReachAroundGeometry = REACH_AROUND) -> dict[str, Any]:
    """Run `episodes` episodes of the package and judge them (see the module doc). A simulated robot is
    reset to each seed's start; on franka-sim (`franka:HOST`) the arm is driven there before each episode."""
    from dataclasses import replace

    from runtime.loop import LoopConfig
    from runtime.policy import Policy
    from runtime.stats import Counters

    policy = Policy(Path(package), precision=precision, candidates=candidates, seed=seed,
                    temporal_consistency=None if temporal_consistency else False)
    period = float(policy.manifest.control.period_s)
    handle = _connect(robot, period, str(package))
    runs: list[tuple[int, Any, int]] = []  # (seed, stats, episode index inside stats)
    counters = Counters()
    extra: dict[str, Any] = {}
    try:
        base = LoopConfig(episodes=episodes, base_seed=seed, max_steps=max_steps, period_s=period,
                          lockstep=handle.lockstep)
        latencies: list[float] = []
        if handle.simulated:
            stats = _run(policy, StartsRobot(handle.robot, start_for_seed), handle.capabilities, base)
            runs = [(ep.seed, stats, ep.index) for ep in stats.episodes]
            counters, last = stats.counters, stats
            latencies = list(stats.plan_latency_s)
        else:
            last = None
            for i in range(episodes):
                if not drive_to(handle.robot, start_for_seed(seed + i).astype(np.float64), period):
                    extra["stop"] = f"could not drive the arm to the start of seed {seed + i}"
                    break
                stats = _run(policy, handle.robot, handle.capabilities, replace(base, episodes=1, base_seed=seed + i))
                runs.append((seed + i, stats, stats.episodes[0].index if stats.episodes else 0))
                for k, v in vars(stats.counters).items():
                    setattr(counters, k, getattr(counters, k) + v)
                latencies += list(stats.plan_latency_s)
                last = stats
                if stats.stop_reason:
                    break
            link = getattr(handle.robot, "stats", None)
            if link is not None:
                extra.update(reflexes=link.control_errors, bridge_limit_clamps=link.limit_clamps,
                             lost_cycles=link.lost_cycles, bridge_rejected=link.rejected_commands,
                             last_error=link.last_error)
    finally:
        handle.close()
    verdicts = [(s, judge(q, geom)) for s, st, i in runs if len(q := episode_positions(st.step_log, i))]
    report = summarise([v for _, v in verdicts], counters, last)
    if extra.get("stop"):
        report["stop_reason"] = extra.pop("stop")
    report.update(extra)
    report["timing"] = plan_timing(latencies, counters, period)
    report.update(package=str(package), robot=handle.spec, precision=precision or "package default", seed=seed,
                  max_steps=max_steps, per_episode=[{"seed": s, "success": v.success, "mode": v.mode,
                                                    "reached_step": v.reached_step, "entered_step": v.entered_step,
                                                    "final_error": round(v.final_error, 4)} for s, v in verdicts])
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("package", help="model package directory (a franka-reach-around policy)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help="first episode's seed (start and policy noise)")
    p.add_argument("--robot", default="emulator-lockstep",
                   help="emulator-lockstep (default), emulator, or franka:HOST (franka-sim on loopback)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None, help="default: the package's default")
    p.add_argument("--candidates", type=int, default=None, help="RS-IMLE candidates per plan (1: no selection)")
    p.add_argument("--no-temporal-consistency", action="store_true")
    p.add_argument("--max-steps", type=int, default=120)
    p.add_argument("--json", default=None, help="write the report (with per-episode rows) here")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or args.max_steps < 1:
        print(f"{PROG}: error: --episodes and --max-steps must be >= 1", file=sys.stderr)
        return 2
    if not (Path(args.package) / "manifest.json").is_file():
        print(f"{PROG}: error: {args.package} is not a model package (no manifest.json)", file=sys.stderr)
        return 2
    try:
        report = evaluate_arm(args.package, args.episodes, args.seed, args.robot, args.precision, args.candidates,
                              not args.no_temporal_consistency, args.max_steps)
    except Exception as exc:  # a package, robot or loop that cannot start: one line, never a traceback
        print(f"{PROG}: error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    short = {k: v for k, v in report.items() if k != "per_episode"}
    print(json.dumps(short, indent=1))
    return 4 if report["stop_reason"] else 0


if __name__ == "__main__":
    sys.exit(main())
