"""``imle-eval``: closed-loop evaluation of a model package in gym-pusht, through ``runtime.Policy``."""
from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  imle-eval exported_models/pusht-state                       # 50 episodes, seeds 100000..100049
  imle-eval PKG --precision fp32 --workers 2 --out results/pkg-fp32
  imle-eval PKG --episodes 10 --save-media --out results/media  # GIFs + a PNG grid of final frames
  imle-eval PKG --candidates 1 --no-temporal-consistency        # ablations
  imle-eval PKG --tc-reset-after 0                              # never re-draw the selection reference

Metrics: per episode the maximum of gym-pusht's reward clip(coverage/0.95, 0, 1); over episodes the
score (average of that maximum, "average max overlap") with a bootstrap 95% CI and the success rate
(coverage > 0.95 reached) with a Wilson 95% CI. At most 300 steps per episode (10 Hz).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imle-eval", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", help="model package directory (imle-export output)")
    p.add_argument("--episodes", type=int, default=50, help="episodes (default %(default)s)")
    p.add_argument("--seed", type=int, default=100000, help="episode i uses seed+i (default %(default)s)")
    p.add_argument("--max-steps", type=int, default=300, help="step limit per episode (default %(default)s)")
    p.add_argument("--precision", choices=["fp32", "int8"], default=None,
                   help="graph to run (default: int8 when the package has it)")
    p.add_argument("--candidates", type=int, default=None, help="candidates per plan (default: the package's)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per worker (default 1)")
    p.add_argument("--device", choices=["cpu", "cuda", "tensorrt"], default="cpu",
                   help="where the policy's network runs (cuda/tensorrt need onnxruntime-gpu; default cpu)")
    p.add_argument("--workers", type=int, default=1, help="processes over episodes (default 1)")
    p.add_argument("--no-temporal-consistency", action="store_true",
                   help="pick candidate 0 every plan instead of the one closest to the previous plan")
    p.add_argument("--tc-reset-after", type=int, default=None, metavar="N",
                   help="re-draw the temporal-consistency reference every N plans (0: never; default: the package's)")
    p.add_argument("--action-horizon", type=int, default=None, metavar="TA",
                   help="rows of each plan executed before re-planning (1..pred-obs+1; default: the package's)")
    p.add_argument("--out", default=None, help="write summary.json, episodes.csv (and media) here")
    p.add_argument("--save-media", action="store_true",
                   help="GIFs of the first --gif-episodes rollouts and a PNG grid of all final frames (needs --out)")
    p.add_argument("--gif-episodes", type=int, default=4, help="rollouts saved as GIF with --save-media (default 4)")
    p.add_argument("--quiet", action="store_true", help="summary only: no per-episode table, no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.save_media and not args.out:
        print("imle-eval: error: --save-media needs --out DIR", file=sys.stderr)
        return 2
    try:
        from runtime.package import PackageError
        from trainer.evaluate.env import SimUnavailable, require_gym_pusht
        from trainer.evaluate.report import table, write_outputs
        from trainer.evaluate.rollout import EvalOptions, evaluate_package
    except ImportError as exc:
        print(f"imle-eval: error: {exc.name} is not installed: pip install -e '.[robot,sim]'", file=sys.stderr)
        return 2
    opts = EvalOptions(episodes=args.episodes, seed=args.seed, max_steps=args.max_steps, precision=args.precision,
                       candidates=args.candidates, threads=args.threads, device=args.device,
                       temporal_consistency=False if args.no_temporal_consistency else None,
                       tc_reset_after=args.tc_reset_after, action_horizon=args.action_horizon, workers=args.workers,
                       gif_episodes=args.gif_episodes if args.save_media else 0, final_frames=args.save_media,
                       progress=not args.quiet)
    try:
        require_gym_pusht()
        report = evaluate_package(args.package, opts)
    except (PackageError, SimUnavailable, ValueError) as exc:
        print(f"imle-eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imle-eval: interrupted", file=sys.stderr)
        return 130
    print(table(report, per_episode=not args.quiet))
    if args.out:
        for path in write_outputs(report, args.out, save_media=args.save_media):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
