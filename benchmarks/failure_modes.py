"""Why do Push-T episodes fail? Re-run chosen episodes of a package and sort them by how they ended.

A package's score is the mean over episodes of max coverage / 0.95, so a few episodes that never reach
the goal cost more than many near misses. This script replays the episodes you name (same seeds: the
same start and the same latents as ``imle-eval``), records the state every step, and classifies each
by its last 100 steps:

  wall      the block ended with its centre near a wall (the pusher cannot get behind it there)
  stalled   the block moved less than --stall-px in the last 100 steps, away from the walls
  pushing   the block was still moving when the step limit came

    python benchmarks/failure_modes.py exported_models/pusht-state-imle --from runs/eval/summary.json --below 0.5 \\
        --out benchmarks/results/failure_modes

--from takes an ``imle-eval --out`` summary.json (its episodes' seeds and max rewards); --seeds a list.
Writes <out>.json (per episode: seed, class, final block pose, distances) and <out>.png (last frames).

With --demos ZARR and --population START:COUNT[,START:COUNT...] (the evaluated seed ranges the failures
came from) it also asks whether failures start far from the demonstrations: every start's block
distance to the nearest demo's first block position, and the failure rate per quartile of it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WORKSPACE = 512.0  # gym-pusht's square, px
TAIL = 100  # steps looked at: the end of the episode
WALL_PX = 70.0  # block centre this close to a wall: the T's half-width is ~60 px
STALL_PX = 10.0
MAX_POPULATION = 100_000  # seeds whose starts --population resets the env to


class RecordingEnv:
    """Delegates to a gym-pusht env and keeps every observed state (the rollout's own code runs it)."""

    def __init__(self, env) -> None:
        self.env, self.states = env, []

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.states = [np.asarray(obs, np.float64)]
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        self.states.append(np.asarray(out[0], np.float64))
        return out

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def classify(states: np.ndarray, wall_px: float = WALL_PX, stall_px: float = STALL_PX) -> dict:
    """states [T, 5] (agent x, y, block x, y, angle) -> the episode's ending class and its measures."""
    if states.ndim != 2 or states.shape[1] < 5 or len(states) < 2 or not np.isfinite(states).all():
        raise ValueError(f"states must be a finite [T >= 2, 5] array, got shape {states.shape}")
    tail = states[-TAIL:]
    block = tail[-1, 2:4]
    wall = float(min(block.min(), WORKSPACE - block.max()))
    block_moved = float(np.linalg.norm(np.diff(tail[:, 2:4], axis=0), axis=1).sum())
    agent_path = float(np.linalg.norm(np.diff(tail[:, 0:2], axis=0), axis=1).sum())
    kind = "wall" if wall < wall_px else "stalled" if block_moved < stall_px else "pushing"
    return {"class": kind, "block_to_wall_px": round(wall, 1), "block_moved_px": round(block_moved, 1),
            "agent_path_px": round(agent_path, 1), "final_block": [round(float(v), 2) for v in tail[-1, 2:5]]}


def seeds_from(path: Path, below: float) -> list[int]:
    """Seeds of the episodes in an imle-eval summary.json whose max reward is below ``below``."""
    try:
        episodes = json.loads(path.read_text())["episodes"]
        return [int(e["seed"]) for e in episodes if float(e["max_reward"]) < below]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an imle-eval summary.json ({type(exc).__name__}: {exc})") from None


def parse_population(text: str) -> list[int]:
    """'400000:300,500000:300' -> every seed of those ranges (at most MAX_POPULATION)."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        start, _, count = part.partition(":")
        if not (start.isdigit() and count.isdigit() and int(count) > 0):
            raise ValueError(f"--population {part!r} must be START:COUNT with integers, COUNT > 0")
        if len(seeds) + int(count) > MAX_POPULATION:
            raise ValueError(f"--population {text!r} holds more than {MAX_POPULATION} seeds")
        seeds += range(int(start), int(start) + int(count))
    return seeds


def check_package(manifest, task_state: tuple[str, ...]) -> None:
    """classify() reads the pusher and the block from the observed state: Push-T state packages only."""
    names = tuple(manifest.obs.state_names)
    if manifest.obs.image_shape is not None or names != task_state:
        raise ValueError(f"package obs.state_names is {list(names)}"
                         f"{' with images' if manifest.obs.image_shape is not None else ''}; failure_modes replays "
                         f"Push-T state packages only ({list(task_state)})")


def demo_starts(demos: str) -> np.ndarray:
    """[episodes, 2] block position of each demonstration's first frame (DatasetError: one line)."""
    from trainer.data.replay_buffer import DatasetError, load_replay_buffer

    buf = load_replay_buffer(demos, keys=("state",), image_keys=())
    state = buf.data["state"]
    if state.ndim != 2 or state.shape[1] != 5:
        raise DatasetError(f"{demos}: data/state is {list(state.shape)}; Push-T's has 5 columns "
                           "(agent x, y, block x, y, angle)")
    return state[np.r_[0, buf.episode_ends[:-1]], 2:4]


def demo_coverage(population: list[int], failed: set[int], first: np.ndarray) -> dict:
    """Failure rate by quartile of each start's block distance to the nearest demonstration's start."""
    from trainer.evaluate.env import make_env

    env = make_env(None)
    try:
        starts = np.array([np.asarray(env.reset(seed=s)[0], np.float64)[2:4] for s in population])
    finally:
        env.close()
    near = np.linalg.norm(starts[:, None] - first[None], axis=2).min(axis=1)
    fail = np.isin(population, sorted(failed))
    edges = np.quantile(near, [0, 0.25, 0.5, 0.75, 1])
    quartile = np.searchsorted(edges[1:-1], near, side="right")  # each start in exactly one quartile
    rows = []
    for q, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        m = quartile == q
        rate = round(float(fail[m].mean()), 4) if m.any() else None
        rows.append({"from_px": round(float(lo), 1), "to_px": round(float(hi), 1), "episodes": int(m.sum()),
                     "failed": int(fail[m].sum()), "failure_rate": rate})
    return {"demo_starts": len(first), "population": len(population), "quartiles": rows,
            "mean_px_failed": round(float(near[fail].mean()), 1) if fail.any() else None,
            "mean_px_other": round(float(near[~fail].mean()), 1) if (~fail).any() else None}


def run(pkg, seeds: list[int], precision: str | None) -> list[dict]:
    """Replay ``seeds`` with a loaded Push-T state package; rows carry each episode's last frame."""
    from trainer.evaluate.env import make_env
    from trainer.evaluate.rollout import EvalOptions, package_factory, run_episode

    factory = package_factory(pkg, EvalOptions(precision=precision))
    factory(seeds[0])  # a bad precision is refused before the environment opens
    env = RecordingEnv(make_env(None, render_size=192))
    rows = []
    try:
        for i, seed in enumerate(seeds):
            result, media = run_episode(factory(seed), env, seed, i, final_frame=True)
            row = {"seed": seed, "max_reward": result.max_reward, "steps": result.steps,
                   **classify(np.array(env.states))}
            rows.append({**row, "_frame": media.final})
            print(f"{seed}: {row['class']:<8} reward {result.max_reward:.3f}  block {row['block_to_wall_px']:6.1f} px "
                  f"from a wall, moved {row['block_moved_px']:6.1f} px in the last {TAIL} steps", file=sys.stderr)
    finally:
        env.close()
    return rows


def save_grid(rows: list[dict], path: Path, cols: int = 8) -> None:
    from PIL import Image, ImageDraw

    h, w = rows[0]["_frame"].shape[:2]  # run() keeps every episode's last frame
    grid = Image.new("RGB", (cols * w, -(-len(rows) // cols) * h), "white")
    for k, r in enumerate(rows):
        tile = Image.fromarray(np.asarray(r["_frame"], np.uint8))
        ImageDraw.Draw(tile).text((4, 4), f"{r['seed']} {r['class']}", fill=(200, 0, 0))
        grid.paste(tile, ((k % cols) * w, (k // cols) * h))
    grid.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package")
    p.add_argument("--from", dest="source", default=None, help="imle-eval summary.json to take failing seeds from")
    p.add_argument("--below", type=float, default=0.5, help="with --from: episodes whose max reward is below this")
    p.add_argument("--seeds", default="", help="comma separated episode seeds (instead of, or with, --from)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None)
    p.add_argument("--demos", default=None, help="replay buffer (zarr) whose episode starts to compare with")
    p.add_argument("--population", default="", help="with --demos: the evaluated seed ranges, START:COUNT,...")
    p.add_argument("--out", default="benchmarks/results/failure_modes")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except (ValueError, RuntimeError) as exc:  # PackageError, DatasetError, SimUnavailable and our refusals
        print(f"failure_modes: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    from runtime.package import load_package
    from trainer.tasks import resolve_task

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r} must be comma separated integers") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds {args.seeds!r}: gym-pusht seeds are >= 0")
    if args.source:
        seeds += seeds_from(Path(args.source), args.below)
    if not seeds:
        raise ValueError("no episodes to replay (give --seeds, or --from with episodes below --below)")
    population = parse_population(args.population)
    if bool(args.demos) != bool(population):
        raise ValueError("--demos and --population go together")
    if population and not set(seeds) <= set(population):
        raise ValueError(f"--population does not hold the failing seeds {sorted(set(seeds) - set(population))[:5]}")
    if not (Path(args.package) / "manifest.json").is_file():
        raise ValueError(f"{args.package} is not a model package (no manifest.json)")
    pkg = load_package(args.package)
    check_package(pkg.manifest, resolve_task("pusht-state").state.use)
    first = demo_starts(args.demos) if population else None  # a bad buffer is refused before the replays
    rows = run(pkg, seeds, args.precision)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(rows, out.with_suffix(".png"))
    counts = {k: sum(r["class"] == k for r in rows) for k in ("wall", "stalled", "pushing")}
    clean = [{k: v for k, v in r.items() if k != "_frame"} for r in rows]
    result = {"package": args.package, "counts": counts, "episodes": clean}
    if first is not None:
        result["demo_coverage"] = cov = {"demos": args.demos, **demo_coverage(population, set(seeds), first)}
        for q in cov["quartiles"]:
            print(f"start {q['from_px']:5.1f}-{q['to_px']:5.1f} px from the nearest demo start: "
                  f"{q['failed']} of {q['episodes']} failed")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(" ".join(f"{k} {v}" for k, v in counts.items()) + f" of {len(rows)} episodes; wrote {out}.json, {out}.png")
    return 0

if __name__ == "__main__":
    sys.exit(main())
