"""``imle-train``: train an IMLE Policy (or a baseline) on a Diffusion Policy replay buffer."""
from __future__ import annotations

import argparse
import shlex
import sys

from trainer.data.replay_buffer import DatasetError, default_pusht_path
from trainer.train.checkpoint import CheckpointError
from trainer.train.config import TASKS, task_preset

EPILOG = """\
examples:
  imle-train --task pusht-state                        # the default recipe on the shared Push-T demos
  imle-train --task pusht-state --fraction 0.25 --out runs/quarter
  imle-train --task pusht-state --preset paper --device cuda --steps 20000
  imle-train --task pusht-state --out runs/a --steps 6000   # resumes runs/a/last.pt and trains on to 6000

The data defaults to $IMLE_PUSHT_ZARR or ../shared/data/pusht/pusht_cchi_v7_replay.zarr.
Outputs in --out: last.pt (resumable checkpoint), best.pt (with --eval-every), metrics.jsonl,
loss.png, config.json and episodes.json (the exact demonstration subset used).
NaN or inf in the data is refused before training (the message names the episode and frame).

exit codes: 0 trained; 2 bad arguments, data or checkpoint; 3 training diverged (the loss or
gradient became NaN or inf; the last checkpoint on disk is still good); 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imle-train", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="pusht-state", help="task preset (default: %(default)s)")
    p.add_argument("--method", choices=["rs_imle", "diffusion", "flow_matching"], default=None,
                   help="objective: rs_imle (the method, default) or a baseline on the same U-Net")
    p.add_argument("--data", default=None, help="replay buffer (.zarr); default: the shared Push-T demos")
    sub = p.add_mutually_exclusive_group()
    sub.add_argument("--episodes", type=int, default=None, help="use this many demonstrations")
    sub.add_argument("--fraction", type=float, default=None, help="use this fraction of demonstrations (0-1]")
    p.add_argument("--subset-seed", type=int, default=None, help="seed of the demonstration subset (default 0)")
    p.add_argument("--preset", choices=["tiny", "small", "paper"], default=None,
                   help="U-Net size: tiny 32/64/128, small 64/128/256 (default), paper 256/512/1024")
    p.add_argument("--state-encoder", choices=["identity", "mlp"], default=None)
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-4)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps")
    p.add_argument("--n-samples", type=int, default=None, help="RS-IMLE: latents per datapoint m (default 20)")
    p.add_argument("--epsilon", type=float, default=None, help="RS-IMLE: rejection radius (default 0.03)")
    p.add_argument("--obs-noise", type=float, default=None,
                   help="std of Gaussian noise added to the observed state while training, in normalised "
                        "units where [-1, 1] spans the demos (default 0: off; 0.02 is about 5 px on Push-T)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--out", default=None, help="run directory (default runs/<task>)")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate the EMA weights in gym-pusht every N steps and keep best.pt (0 = off)")
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--no-resume", action="store_true", help="start over even if --out has a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    return p


def config_from_args(args: argparse.Namespace):
    cfg = task_preset(args.task)
    overrides = {"method": args.method, "net_preset": args.preset, "state_encoder": args.state_encoder,
                 "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup,
                 "seed": args.seed, "device": args.device, "threads": args.threads, "out_dir": args.out,
                 "checkpoint_every": args.checkpoint_every, "eval_every": args.eval_every,
                 "eval_episodes": args.eval_episodes, "obs_noise": args.obs_noise}
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    if args.out is None and args.method not in (None, "rs_imle"):
        cfg.out_dir = f"runs/{args.task}-{args.method}"
    cfg.data.path = str(args.data or default_pusht_path())
    cfg.data.episodes, cfg.data.fraction = args.episodes, args.fraction
    if args.subset_seed is not None:
        cfg.data.subset_seed = args.subset_seed
    if args.n_samples is not None:
        cfg.rs_imle.n_samples = args.n_samples
    if args.epsilon is not None:
        cfg.rs_imle.epsilon = args.epsilon
    if cfg.steps <= 0 or cfg.batch_size <= 0 or cfg.rs_imle.n_samples <= 0:
        raise ValueError("--steps, --batch-size and --n-samples must be positive")
    if cfg.obs_noise < 0:
        raise ValueError(f"--obs-noise must be >= 0, got {cfg.obs_noise}")
    return cfg


def train_main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from trainer.train.loop import TrainingDiverged, train  # imports torch: after --help

    try:
        cfg = config_from_args(args)
        eval_fn = None
        if cfg.eval_every:
            from trainer.evaluate.during_training import make_eval_fn
            eval_fn = make_eval_fn(cfg)
        command = shlex.join(["imle-train", *(sys.argv[1:] if argv is None else argv)])
        result = train(cfg, eval_fn=eval_fn, resume=not args.no_resume, progress=not args.no_progress,
                       command=command)
    except TrainingDiverged as exc:
        print(f"imle-train: error: {exc}", file=sys.stderr)
        return 3
    except (DatasetError, CheckpointError, ValueError) as exc:
        print(f"imle-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imle-train: interrupted; resume with the same command", file=sys.stderr)
        return 130
    print(f"trained {result.steps} steps in {result.wall_s:.0f} s, final loss {result.final_loss:.4f}")
    print(f"checkpoint: {result.last_checkpoint}" + (f" (best: {result.best_checkpoint})" if result.best_checkpoint else ""))
    print(f"metrics: {result.out_dir / 'metrics.jsonl'}  plot: {result.out_dir / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
