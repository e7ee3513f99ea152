"""``imle-train``: train an IMLE Policy (or a baseline) on a Diffusion Policy replay buffer."""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import typing

from trainer.data.replay_buffer import DatasetError, default_pusht_path
from trainer.objectives.rs_imle import RSIMLEConfig
from trainer.tasks import resolve_task
from trainer.train.checkpoint import CheckpointError
from trainer.train.config import TASKS, config_for_task, hyper_flags

EPILOG = """\
examples:
  imle-train --task pusht-state                        # the default recipe on the shared Push-T demos
  imle-train --task pusht-state --fraction 0.25 --out runs/quarter
  imle-train --task pusht-state --preset paper --device cuda --steps 20000
  imle-train --task pusht-state --out runs/a --steps 6000   # resumes runs/a/last.pt and trains on to 6000
  imle-train --task my_arm.toml --data my_arm.zarr --preset tiny   # your robot (imle-task init writes the file)

The data defaults to $IMLE_PUSHT_ZARR or ../shared/data/pusht/pusht_cchi_v7_replay.zarr.
Outputs in --out: last.pt (resumable checkpoint), best.pt (with --eval-every), metrics.jsonl,
loss.png, config.json and episodes.json (the exact demonstration subset used).
A task file that does not match the data (columns, keys, image shape) and NaN or inf in the data
are refused before training, with one line naming the field or the episode and frame.

Default recipes (a built-in task's hyper-parameters when no flag is given; each flag overrides one field):
{recipes}
Other tasks get the generic defaults shown with each flag.

exit codes: 0 trained; 2 bad arguments, data or checkpoint; 3 training diverged (the loss or
gradient became NaN or inf; the last checkpoint on disk is still good); 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    from trainer.train.recipes import RECIPES

    recipes = "\n".join(f"  {name}: {r.why}" for name, r in RECIPES.items())
    p = argparse.ArgumentParser(prog="imle-train", description=__doc__, epilog=EPILOG.format(recipes=recipes),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="pusht-state", metavar="NAME|PATH",
                   help=f"a built-in task ({', '.join(TASKS)}) or a task file (.toml; imle-task init writes one); "
                        "default: %(default)s")
    p.add_argument("--data", default=None, help="replay buffer (.zarr); default: the shared Push-T demos")
    sub = p.add_mutually_exclusive_group()
    sub.add_argument("--episodes", type=int, default=None, help="use this many demonstrations")
    sub.add_argument("--fraction", type=float, default=None, help="use this fraction of demonstrations (0-1]")
    p.add_argument("--subset-seed", type=int, default=None, help="seed of the demonstration subset (default 0)")
    # the hyper-parameters: one option per TrainConfig / RSIMLEConfig field that carries help metadata
    for name, flag, tp, meta in [*hyper_flags(), *_rs_imle_flags()]:
        p.add_argument(flag, dest=name, type=tp, default=None, choices=meta.get("choices"),
                       metavar=meta.get("metavar") or flag[2:].upper().replace("-", "_"), help=meta["help"])
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train on N processes of this machine (DDP through torchrun: one per GPU with --device "
                        "cuda, gloo on CPU); --batch-size is the global batch, split across them")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out has a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    return p


def _rs_imle_flags() -> list[tuple[str, str, type, dict]]:
    hints = typing.get_type_hints(RSIMLEConfig)
    return [(f"rs_imle.{f.name}", "--" + f.name.replace("_", "-"), hints[f.name], dict(f.metadata))
            for f in dataclasses.fields(RSIMLEConfig) if f.metadata.get("help")]


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of a command line: the task's facts, then the flags given (validated)."""
    spec = resolve_task(args.task)
    values = vars(args)
    overrides = {name: values[name] for name, *_ in hyper_flags() if values.get(name) is not None}
    rs = {name.split(".", 1)[1]: values[name] for name, *_ in _rs_imle_flags() if values.get(name) is not None}
    if rs:
        # on top of the task's recipe: --epsilon alone keeps the recipe's m
        overrides["rs_imle"] = dataclasses.replace(config_for_task(spec).rs_imle, **rs)
    if values.get("out_dir") is None and values.get("method") not in (None, "rs_imle"):
        overrides["out_dir"] = f"runs/{spec.name}-{values['method']}"
    cfg = config_for_task(spec, **overrides)
    cfg.data.path = str(args.data or default_pusht_path())
    cfg.data.episodes, cfg.data.fraction = args.episodes, args.fraction
    if args.subset_seed is not None:
        cfg.data.subset_seed = args.subset_seed
    return cfg


def train_main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = os.environ.get("RANK", "0") or "0"
    who = "" if rank == "0" else f" (rank {rank})"  # every rank reports its own failure
    if args.nproc is not None:
        from trainer.train.launch import check_nproc, launch
        try:
            check_nproc(args.nproc)
        except ValueError as exc:
            print(f"imle-train: error: {exc}", file=sys.stderr)
            return 2
        if args.nproc > 1:
            try:  # what can be checked before the ranks start is one line here, not a race between ranks
                batch = config_from_args(args).batch_size
            except (DatasetError, ValueError) as exc:
                print(f"imle-train: error: {exc}", file=sys.stderr)
                return 2
            if batch % args.nproc:
                print(f"imle-train: error: --batch-size {batch} does not split evenly across {args.nproc} processes; "
                      f"use a multiple of {args.nproc}", file=sys.stderr)
                return 2
            return launch(args.nproc, sys.argv[1:] if argv is None else list(argv))
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
        print(f"imle-train: error{who}: {exc}", file=sys.stderr)
        return 3
    except (DatasetError, CheckpointError, ValueError) as exc:
        print(f"imle-train: error{who}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imle-train: interrupted; resume with the same command", file=sys.stderr)
        return 130
    if rank != "0":  # rank 0 reports the run
        return 0
    print(f"trained {result.steps} steps in {result.wall_s:.0f} s, final loss {result.final_loss:.4f}")
    best = f" (best: {result.best_checkpoint})" if result.best_checkpoint else ""
    print(f"checkpoint: {result.last_checkpoint}{best}")
    print(f"metrics: {result.out_dir / 'metrics.jsonl'}  plot: {result.out_dir / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
