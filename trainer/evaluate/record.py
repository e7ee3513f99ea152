"""Record a shipped package's closed-loop score and regression reference into its manifest.

    python -m trainer.evaluate.record exported_models/pusht-state-imle --summary runs/eval/summary.json

``--summary`` takes an ``imle-eval --out`` summary (else the evaluation runs here). The reference
is an in-process lock-step rollout of the first ``--reference-episodes`` episodes through
runtime.Policy: each episode's maximum reward and the first executed actions of episode 0. The HIL
regression test (hil_tests/test_shipped_package.py) replays them through `imle-run` against the
emulated microcontroller in lock-step mode, so a change that breaks deployment fails CI.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from runtime.package import MANIFEST, Evaluation, load_package
from trainer.evaluate.rollout import ActionRecorder, EvalOptions, evaluate_package, run_episode

ENV_ID = "gym_pusht/PushT-v0"
FIRST_ACTIONS = 16


def reference_rollouts(package: str | Path, seed: int, episodes: int, precision: str) -> tuple[list[float], list[list[float]]]:
    """Per-episode max reward of episodes seed..seed+episodes-1, and episode 0's first actions."""
    from runtime.policy import Policy
    from trainer.evaluate.env import make_env

    env = make_env(None, 300)
    rewards, first = [], []
    try:
        for ep in range(episodes):
            rec = ActionRecorder(Policy(package, precision=precision, seed=seed + ep))
            result, _ = run_episode(rec, env, seed + ep, ep)
            rewards.append(float(result.max_reward))
            if ep == 0:
                first = [a.tolist() for a in rec.actions[:FIRST_ACTIONS]]
    finally:
        env.close()
    return rewards, first


def record(package: str | Path, summary: dict, reference_episodes: int = 3) -> Evaluation:
    """Write ``evaluation`` into the package's manifest (the ONNX files and their hashes are untouched)."""
    opts = summary["options"]
    ref_rewards, first = reference_rollouts(package, int(opts["seed"]), reference_episodes, summary["precision"])
    s = summary["summary"]
    evaluation = Evaluation(env=ENV_ID, episodes=int(s["episodes"]), seed=int(opts["seed"]),
                            precision=summary["precision"], candidates=int(summary["candidates"]),
                            score=float(s["score"]["value"]), success_rate=float(s["success"]["value"]),
                            score_ci=[float(s["score"]["low"]), float(s["score"]["high"])],
                            reference_episodes=reference_episodes, reference_max_rewards=ref_rewards,
                            reference_first_actions=first)
    path = Path(package) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["evaluation"] = dataclasses.asdict(evaluation)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    load_package(package)  # the runtime still accepts it
    return evaluation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.evaluate.record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package")
    p.add_argument("--summary", help="an imle-eval summary.json to record instead of evaluating here")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    p.add_argument("--reference-episodes", type=int, default=3)
    args = p.parse_args(argv)
    if not (Path(args.package) / MANIFEST).exists():
        print(f"record: error: no package at {args.package}", file=sys.stderr)
        return 2
    if args.summary:
        summary = json.loads(Path(args.summary).read_text())
    else:
        report = evaluate_package(args.package, EvalOptions(episodes=args.episodes, seed=args.seed,
                                                            precision=args.precision, workers=2))
        summary = report.to_dict()
    ev = record(args.package, summary, args.reference_episodes)
    print(f"recorded: score {ev.score:.3f} [{ev.score_ci[0]:.3f}, {ev.score_ci[1]:.3f}], success {ev.success_rate:.2f} "
          f"over {ev.episodes} episodes ({ev.precision}); reference max rewards {np.round(ev.reference_max_rewards, 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
