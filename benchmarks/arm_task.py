"""The franka-reach-around benchmark: record scripted demonstrations, then (after imle-train/imle-export)
evaluate the package closed loop. docs/franka.md, "A multi-modal arm task", has the whole recipe.

    python benchmarks/arm_task.py record --out runs/arm/demos.zarr --episodes 150
    python benchmarks/arm_task.py eval exported_models/franka-reach-around --episodes 50 --json out.json

`record` drives the generic joint emulator (lock-step, the task's 7 Franka joints and limits) through
imle-record's Recorder and replay-buffer writer, with each episode starting at
trainer.demos.franka_reach.start_for_seed(seed) (imle-record's CLI starts a simulated plant at a seeded
random pose in the whole action box, which would put starts inside the obstacle), and keeps only
demonstrations the task's own judge calls successful.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TASK_FILE = ROOT / "trainer" / "tasks" / "franka-reach-around.toml"
SOURCE = "trainer.demos.franka_reach:reach"


def record(out: str, episodes: int, seed: int, robot: str = "emulator-lockstep") -> dict:
    from runtime import robots
    from runtime.record.buffer import ArraySpec, ReplayBufferWriter
    from runtime.record.session import RecordConfig, Recorder
    from runtime.record.sources import ScriptedSource
    from runtime.task_spec import TaskSpec
    from trainer.demos.franka_reach import REACH_AROUND, start_for_seed
    from trainer.evaluate.arm import StartsRobot
    from trainer.evaluate.arm_success import judge

    task = TaskSpec.from_toml(TASK_FILE)
    specs = [ArraySpec(task.state.key, (len(task.state.names),)), ArraySpec(task.action.key, (len(task.action.names),))]
    attrs = {"imle_record": {"task": task.to_dict(), "robot": robot, "source": f"scripted:{SOURCE}"}}
    source = ScriptedSource.load(SOURCE)
    modes: Counter = Counter()
    counts = Counter()
    t0 = time.monotonic()
    with robots.make_robot(robot, period_s=task.period_s, package=str(TASK_FILE)) as handle, \
            ReplayBufferWriter(out, specs, attrs) as writer:
        rec = Recorder(StartsRobot(handle.robot, start_for_seed), handle.capabilities, task,
                       RecordConfig(task.period_s, max_steps=150, lockstep=handle.lockstep))
        attempt = 0
        while writer.n_episodes < episodes and attempt < 2 * episodes:
            res = rec.record_episode(source, attempt, seed + attempt)
            attempt += 1
            if not res.complete:
                raise RuntimeError(f"episode {res.index} aborted after {res.steps} steps: {res.ended}")
            counts["clipped"] += res.clipped
            counts["rate_limited"] += res.rate_limited
            verdict = judge(res.data[task.state.key], REACH_AROUND)
            if not verdict.success:
                counts["discarded"] += 1
                continue
            writer.append_episode(res.data, res.seed)
            modes[verdict.mode] += 1
        report = {"episodes": writer.n_episodes, "frames": writer.n_frames, "attempts": attempt,
                  "modes": dict(modes), **counts, "wall_s": round(time.monotonic() - t0, 1), "robot": handle.spec}
    source.close()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--episodes", type=int, default=150)
    r.add_argument("--seed", type=int, default=1000)
    e = sub.add_parser("eval")
    e.add_argument("args", nargs=argparse.REMAINDER, help="imle-eval-arm's arguments")
    a = p.parse_args(argv)
    if a.cmd == "record":
        print(json.dumps(record(a.out, a.episodes, a.seed), indent=1))
        return 0
    from trainer.evaluate.arm import main as eval_main
    return eval_main(a.args)


if __name__ == "__main__":
    sys.exit(main())
