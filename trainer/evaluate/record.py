"""Record a shipped package's closed-loop score and regression reference into its manifest.

    python -m trainer.evaluate.record exported_models/pusht-state-imle --summary runs/eval/summary.json

``--summary`` takes an ``imle-eval --out`` summary (else the evaluation runs here). The reference
is an in-process lock-step rollout of the first ``--reference-episodes`` episodes through
runtime.Policy: each episode's maximum reward and the first executed actions of episode 0, at fp32
and at int8. The HIL regression test (hil_tests/test_shipped_package.py) replays them through
`imle-run` against the emulated microcontroller in lock-step mode, so a change that breaks
deployment fails CI.

int8 results depend on the CPU's dot-product instructions (onnxruntime picks other kernels with x86
VNNI or ARM dot product), so int8 references are kept per class of CPU: recording on a machine of
another class adds its reference and keeps the others. ``--references-only`` records them without
re-running the evaluation (the recorded score stays).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from runtime.golden import int8_kernel_flags
from runtime.package import MANIFEST, Evaluation, LockstepReference, load_package
from trainer.evaluate.rollout import ActionRecorder, EvalOptions, evaluate_package, run_episode

ENV_ID = "gym_pusht/PushT-v0"
FIRST_ACTIONS = 16


def reference_rollouts(package: str | Path, seed: int, episodes: int,
                       precision: str) -> tuple[list[float], list[list[float]]]:
    """Per-episode max reward of episodes seed..seed+episodes-1, and episode 0's first actions."""
    from runtime.policy import Policy
    from trainer.evaluate.env import make_env

    shape = load_package(package, trust=False).manifest.obs.image_shape  # an image package observes frames
    env = make_env(tuple(shape) if shape else None, 300)
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


def record_references(package: str | Path, seed: int, episodes: int,
                      existing: list[dict] | None = None) -> list[LockstepReference]:
    """References recorded on this machine at each precision the package has, plus the int8 ones that
    machines of other CPU classes recorded earlier."""
    kernels = int8_kernel_flags()
    keep = [LockstepReference(**r) for r in (existing or [])
            if r.get("precision") == "int8" and r.get("int8_kernels") != kernels]
    fresh = []
    for precision in load_package(package, trust=False).manifest.precisions():
        rewards, first = reference_rollouts(package, seed, episodes, precision)
        fresh.append(LockstepReference(precision, kernels if precision == "int8" else [], rewards, first))
    return fresh + keep


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
    old = (manifest.get("evaluation") or {}).get("references")
    evaluation.references = record_references(package, evaluation.seed, reference_episodes, old)
    manifest["evaluation"] = dataclasses.asdict(evaluation)
    _write_manifest(package, manifest)
    return evaluation


def record_references_only(package: str | Path) -> list[dict]:
    """Re-record the lock-step references of a package that already has an evaluation."""
    path = Path(package) / MANIFEST
    manifest = json.loads(path.read_text())
    ev = manifest.get("evaluation")
    if not ev:
        raise ValueError(f"{package} has no recorded evaluation: run without --references-only first")
    refs = record_references(package, int(ev["seed"]), int(ev["reference_episodes"]) or 3, ev.get("references"))
    ev["references"] = [dataclasses.asdict(r) for r in refs]
    _write_manifest(package, manifest)
    return ev["references"]


def _write_manifest(package: str | Path, manifest: dict) -> None:
    path = Path(package) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    if (Path(package) / "manifest.sig").exists():
        print("record: the manifest changed, so its signature no longer matches: re-sign it with "
              f"imle-sign {package} --key KEY", file=sys.stderr)
    load_package(package, trust=False)  # the runtime still accepts it (the signature is checked after re-signing)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.evaluate.record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package")
    p.add_argument("--summary", help="an imle-eval summary.json to record instead of evaluating here")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    p.add_argument("--reference-episodes", type=int, default=3)
    p.add_argument("--references-only", action="store_true",
                   help="only (re-)record the lock-step references on this machine's CPU class; keep the score")
    args = p.parse_args(argv)
    if not (Path(args.package) / MANIFEST).exists():
        print(f"record: error: no package at {args.package}", file=sys.stderr)
        return 2
    if args.references_only:
        try:
            refs = record_references_only(args.package)
        except ValueError as exc:
            print(f"record: error: {exc}", file=sys.stderr)
            return 2
        for r in refs:
            print(f"reference {r['precision']} (int8 kernels {r['int8_kernels'] or 'none'}): max rewards "
                  f"{np.round(r['max_rewards'], 3).tolist()}")
        return 0
    if args.summary:
        summary = json.loads(Path(args.summary).read_text())
    else:
        report = evaluate_package(args.package, EvalOptions(episodes=args.episodes, seed=args.seed,
                                                            precision=args.precision, workers=2))
        summary = report.to_dict()
    ev = record(args.package, summary, args.reference_episodes)
    print(f"recorded: score {ev.score:.3f} [{ev.score_ci[0]:.3f}, {ev.score_ci[1]:.3f}], success {ev.success_rate:.2f} "
          f"over {ev.episodes} episodes ({ev.precision}); "
          f"reference max rewards {np.round(ev.reference_max_rewards, 3).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
