"""imle-eval-arm: closed-loop evaluation of a joint-space arm package through the runtime's ControlLoop.

    imle-eval-arm exported_models/franka-reach-around --episodes 50          # emulator, lock-step
    imle-eval-arm PKG --robot emulator --episodes 50 --json out.json         # emulator, real time

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
        "refused_commands": counters.refused_commands,
        "bad_states": counters.bad_states,
        "estops": counters.estops,
        "nan_blocked": counters.nan_blocked,
        "stop_reason": stats.stop_reason,
    }


def evaluate_arm(package: str | Path, episodes: int = 50, seed: int = EVAL_SEED_BASE, robot: str = "emulator-lockstep",
                 precision: Optional[str] = None, candidates: Optional[int] = None, temporal_consistency: bool = True,
                 max_steps: int = 120, geom: ReachAroundGeometry = REACH_AROUND) -> dict[str, Any]:
    """Run `episodes` episodes of the package on a simulated robot and judge them (see the module doc)."""
    from runtime import robots
    from runtime.loop import ControlLoop, LoopConfig
    from runtime.policy import Policy

    policy = Policy(Path(package), precision=precision, candidates=candidates, seed=seed,
                    temporal_consistency=None if temporal_consistency else False)
    period = float(policy.manifest.control.period_s)
    handle = robots.make_robot(robot, period_s=period, package=str(package))
    try:
        if not handle.simulated:
            raise ValueError(f"{PROG} needs a simulated robot (the starts are set by Reset); {handle.spec} is not")
        wrapped = StartsRobot(handle.robot, start_for_seed)
        config = LoopConfig(episodes=episodes, base_seed=seed, max_steps=max_steps, period_s=period,
                            lockstep=handle.lockstep)
        loop = ControlLoop(policy, wrapped, config, handle.capabilities)  # type: ignore[arg-type]
        try:
            stats = loop.run()
        finally:
            loop.close()
    finally:
        handle.close()
    verdicts = []
    for ep in stats.episodes:
        q = episode_positions(stats.step_log, ep.index)
        verdicts.append(judge(q, geom) if len(q) else None)
    judged = [v for v in verdicts if v is not None]
    report = summarise(judged, stats.counters, stats)
    report.update(package=str(package), robot=handle.spec, precision=policy.precision if hasattr(policy, "precision")
                  else precision, seed=seed, max_steps=max_steps, wall_s=round(stats.wall_s, 1),
                  per_episode=[{"seed": ep.seed, "success": v.success, "mode": v.mode, "reached_step": v.reached_step,
                                "entered_step": v.entered_step, "final_error": round(v.final_error, 4)}
                               for ep, v in zip(stats.episodes, verdicts) if v is not None])
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("package", help="model package directory (a franka-reach-around policy)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help="first episode's seed (start and policy noise)")
    p.add_argument("--robot", default="emulator-lockstep", help="emulator-lockstep (default) or emulator")
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
