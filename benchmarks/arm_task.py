"""The franka-reach-around benchmark: record scripted demonstrations, then (after imle-train/imle-export)
evaluate the package closed loop. docs/franka.md, "A multi-modal arm task", has the whole recipe.

    python benchmarks/arm_task.py record --out runs/arm/demos.zarr --episodes 150
    python benchmarks/arm_task.py eval exported_models/franka-reach-around --episodes 50 --json out.json
    python benchmarks/arm_task.py compare runs/arm/demos.zarr runs/arm/bridge_demos.zarr --json cmp.json

`record` drives the generic joint emulator (lock-step, the task's 7 Franka joints and limits) through
imle-record's Recorder and replay-buffer writer, with each episode starting at
trainer.demos.franka_reach.start_for_seed(seed) (imle-record's CLI starts a simulated plant at a seeded
random pose in the whole action box, which would put starts inside the obstacle), and keeps only
demonstrations the task's own judge calls successful. Recording through the Franka bridge (franka-sim
or an arm) is imle-record itself with `--start trainer.demos.franka_reach:start` (docs/franka.md); `compare`
then sets the two buffers side by side: episode lengths, joint statistics, command speeds, starts, the
judge's verdict and mode of every stored demonstration.
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


def buffer_stats(path: str, first: int | None = None) -> dict:
    """One buffer's demonstrations: sizes, per-joint state statistics, command speeds, starts, and the task
    judge's verdict (success, mode) on every episode's measured positions."""
    import numpy as np

    from trainer.data import load_replay_buffer
    from trainer.demos.franka_reach import REACH_AROUND
    from trainer.evaluate.arm_success import judge

    rb = load_replay_buffer(path)
    s, a = np.asarray(rb.data["state"], np.float64), np.asarray(rb.data["action"], np.float64)
    ends = np.asarray(rb.episode_ends, np.int64)[:first]  # the first `first` episodes (all: None)
    if len(ends) == 0:
        raise SystemExit(f"{path}: no episodes to compare")
    s, a = s[:ends[-1]], a[:ends[-1]]
    begins = np.concatenate([[0], ends[:-1]])
    lengths = ends - begins
    period = 0.1
    verdicts, speeds, peak, starts, final_err = [], [], [], [], []
    for b, e in zip(begins, ends):
        q, u = s[b:e], a[b:e]
        verdicts.append(judge(q, REACH_AROUND))
        v = np.abs(np.diff(q, axis=0)) / period  # measured joint speed, rad/s
        speeds.append(v.mean(axis=0))
        peak.append(np.abs(np.diff(u, axis=0)).max(axis=0) / period)
        starts.append(q[0])
        final_err.append(np.abs(q[-1] - REACH_AROUND.goal).max())
    modes = Counter(v.mode for v in verdicts if v.success)
    ok = sum(v.success for v in verdicts)

    def r(x) -> list:
        return [round(float(y), 4) for y in np.asarray(x).reshape(-1)]
    return {
        "buffer": path if first is None else f"{path} (first {len(ends)})",
        "episodes": int(len(ends)), "frames": int(ends[-1]) if len(ends) else 0,
        "length": {"mean": round(float(lengths.mean()), 1), "min": int(lengths.min()), "max": int(lengths.max())},
        "success": ok, "failed_seeds_index": [i for i, v in enumerate(verdicts) if not v.success],
        "modes": {m: modes.get(m, 0) for m in ("over", "under", "none")},
        "entered_avoid_box": sum(v.entered_step is not None for v in verdicts),
        "steps_to_goal_median": float(np.median([v.reached_step for v in verdicts if v.success])) if ok else None,
        "final_error_max": round(float(max(final_err)), 4),
        "state_mean": r(s.mean(axis=0)), "state_std": r(s.std(axis=0)),
        "start_mean": r(np.mean(starts, axis=0)), "start_std": r(np.std(starts, axis=0)),
        "joint_speed_mean": r(np.mean(speeds, axis=0)),
        "command_speed_peak_max": r(np.max(peak, axis=0)),
        "state_minus_action_rms": round(float(np.sqrt(np.mean((s - a) ** 2))), 4),
    }


def compare(paths: list[str], first: int | None = None) -> dict:
    """buffer_stats of each buffer (its first `first` episodes), and the largest per-joint difference of
    their means and spreads."""
    import numpy as np
    out = {"buffers": [buffer_stats(p, first) for p in paths]}
    if len(paths) == 2:
        x, y = out["buffers"]
        for key in ("state_mean", "state_std", "joint_speed_mean"):
            out[f"max_abs_diff_{key}"] = round(float(np.max(np.abs(np.subtract(x[key], y[key])))), 4)
    return out


def table(report: dict) -> str:
    """The comparison as a markdown table (one column per buffer)."""
    bs = report["buffers"]

    def row(name: str, fn) -> str:
        return f"| {name} | " + " | ".join(str(fn(b)) for b in bs) + " |"

    def joints(key: str):
        return lambda b: " ".join(f"{v:.2f}" for v in b[key])
    lines = ["| | " + " | ".join(b["buffer"] for b in bs) + " |", "|---" * (len(bs) + 1) + "|",
             row("episodes / frames", lambda b: f"{b['episodes']} / {b['frames']}"),
             row("length mean (min-max)",
                 lambda b: f"{b['length']['mean']} ({b['length']['min']}-{b['length']['max']})"),
             row("judge: success", lambda b: f"{b['success']}/{b['episodes']}"),
             row("modes over / under", lambda b: f"{b['modes']['over']} / {b['modes']['under']}"),
             row("entered avoid box", lambda b: b["entered_avoid_box"]),
             row("median steps to goal", lambda b: b["steps_to_goal_median"]),
             row("state mean (j1..j7)", joints("state_mean")),
             row("state std", joints("state_std")),
             row("start std", joints("start_std")),
             row("mean joint speed, rad/s", joints("joint_speed_mean")),
             row("peak command speed, rad/s", joints("command_speed_peak_max")),
             row("rms(state - command), rad", lambda b: b["state_minus_action_rms"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--episodes", type=int, default=150)
    r.add_argument("--seed", type=int, default=1000)
    c = sub.add_parser("compare")
    c.add_argument("buffers", nargs="+")
    c.add_argument("--json", default=None)
    c.add_argument("--first", type=int, default=None, help="compare only each buffer's first N episodes")
    e = sub.add_parser("eval")
    e.add_argument("args", nargs=argparse.REMAINDER, help="imle-eval-arm's arguments")
    a = p.parse_args(argv)
    if a.cmd == "record":
        print(json.dumps(record(a.out, a.episodes, a.seed), indent=1))
        return 0
    if a.cmd == "compare":
        report = compare(a.buffers, a.first)
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=1))
        print(table(report))
        return 0
    from trainer.evaluate.arm import main as eval_main
    return eval_main(a.args)


if __name__ == "__main__":
    sys.exit(main())
