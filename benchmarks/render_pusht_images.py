"""Push-T image demos re-rendered from their states by gym-pusht itself, exactly as evaluation renders.

Why: a lent GPU machine gets at most 64 MiB carried, and training on frames drawn by the evaluation's
own renderer removes any gap between training and evaluation pixels. Each recorded state
[agent x, y, block x, y, angle] is placed in the environment that ``imle-eval`` builds
(``trainer.evaluate.env.make_env`` with a 96x96 ``pixels_agent_pos`` observation) the way
``trainer.evaluate.env.reset_to_state`` places it (fresh space, angle before position, one physics
step), and the observation's pixels are stored as uint8 in ``data/img``. ``data/*`` arrays other than
``img`` and ``meta/episode_ends`` are copied. The output is written under ``<out>.partial`` and renamed
when complete, so a run cut short never leaves a buffer that looks whole.

    python benchmarks/render_pusht_images.py --data .gpu/data/pusht.zarr --out runs/pusht_img.zarr --workers 16
    python benchmarks/render_pusht_images.py --data D --out O --limit 300      # first whole episodes, <= 300 frames
    python benchmarks/render_pusht_images.py --data SHARED_ZARR --check 500 --report benchmarks/results/render_check
        # renders 500 frames spread over the buffer in this process and compares them with its data/img
        # (mean absolute pixel difference, per-frame time): REPORT.json and REPORT.png (dataset | render | diff)

Exit codes: 0 done; 2 bad arguments or data (one line naming the field); 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere (the device runs it with PYTHONPATH too)
    sys.path.insert(0, str(ROOT))

from trainer.data.replay_buffer import DatasetError, check_finite, open_buffer  # noqa: E402

STATE_DIM = 5  # [agent x, y, block x, y, block angle]: gym-pusht's state observation
WORKSPACE = (0.0, 512.0)  # Push-T's window; a position outside it is not a Push-T state
CHUNK = 256  # frames per render task and per zarr chunk (256 x 96 x 96 x 3 = 7 MB)


@dataclass(frozen=True)
class RenderConfig:
    data: Path
    out: Path | None
    workers: int = 1
    size: int = 96
    limit: int = 0  # 0: every frame; else the first whole episodes totalling at most this many frames
    progress: bool = True


# ----------------------------------------------------------------------------- rendering

_ENV = None  # one environment per process (a worker's, or the main process's)


def _env(size: int):
    global _ENV
    if _ENV is None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        from trainer.evaluate.env import make_env
        _ENV = make_env((3, size, size))  # the exact environment imle-eval observes through
        _ENV.reset(seed=0)
    return _ENV


def render_state(env, state: np.ndarray) -> np.ndarray:
    """The [H, W, 3] uint8 observation frame of ``env`` placed at ``state``.

    Placement as ``trainer.evaluate.env.reset_to_state`` (firmware_bridge's ``reset_pusht``) without its
    ``env.reset``, which would render a frame only to throw it away; tests hold the two equal.
    """
    from trainer.evaluate.env import split_obs

    u = env.unwrapped
    u._setup()
    ax, ay, bx, by, angle = (float(v) for v in state)
    u.agent.velocity = (0.0, 0.0)
    u.block.velocity = (0.0, 0.0)
    u.block.angular_velocity = 0.0
    u.agent.position = (ax, ay)
    u.block.angle = angle  # before the position: pymunk turns the T about its offset centre of gravity
    u.block.position = (bx, by)
    u.space.step(u.dt)
    _, image = split_obs(u.get_obs())  # what the policy sees in evaluation: [3, H, W] uint8
    return np.ascontiguousarray(np.moveaxis(image, 0, -1))


def _render_block(task: tuple[int, np.ndarray, int]) -> tuple[int, np.ndarray]:
    start, states, size = task
    env = _env(size)
    return start, np.stack([render_state(env, s) for s in states])


# ----------------------------------------------------------------------------- input checks

def read_states(data: Path) -> tuple[dict[str, np.ndarray], np.ndarray, object]:
    """``data/*`` arrays except images (first ``episode_ends[-1]`` frames), episode ends, the zarr root.

    One-line DatasetError for: not a replay buffer, no data/state or data/action, a state that is not
    [frames, 5], too few frames, NaN or inf, positions outside Push-T's 512 x 512 workspace.
    """
    root, ends = open_buffer(data)
    n = int(ends[-1])
    have = sorted(root["data"].keys()) if "data" in root else []
    for key in ("state", "action"):
        if key not in have:
            raise DatasetError(f"{data} has no data/{key} (it has: {', '.join(have) or 'nothing'})")
    arrays: dict[str, np.ndarray] = {}
    for key in have:
        if key == "img":
            continue
        arr = root[f"data/{key}"]
        if arr.shape[0] < n:
            raise DatasetError(f"{data}: data/{key} has {arr.shape[0]} frames but meta/episode_ends says {n}")
        arrays[key] = np.asarray(arr[:n])
    state = arrays["state"]
    if state.ndim != 2 or state.shape[1] != STATE_DIM:
        raise DatasetError(f"{data}: data/state must be [frames, {STATE_DIM}] (agent x, y, block x, y, angle), "
                           f"got {list(state.shape)}")
    if not np.issubdtype(state.dtype, np.number):
        raise DatasetError(f"{data}: data/state has dtype {state.dtype}; expected numbers")
    with np.errstate(over="ignore"):
        as64 = state.astype(np.float64)
    check_finite(as64, ends, "data/state", data)
    pos = as64[:, :4]
    bad = np.flatnonzero(((pos < WORKSPACE[0]) | (pos > WORKSPACE[1])).any(axis=1))
    if len(bad):
        f = int(bad[0])
        raise DatasetError(f"{data}: data/state frame {f} has a position outside Push-T's workspace "
                           f"[{WORKSPACE[0]:g}, {WORKSPACE[1]:g}]: {as64[f, :4].tolist()}")
    return arrays, ends, root


def whole_episodes(ends: np.ndarray, limit: int) -> np.ndarray:
    """The episode ends of the first whole episodes totalling at most ``limit`` frames (at least one)."""
    if limit <= 0:
        return ends
    keep = int(np.searchsorted(ends, limit, side="right"))
    return ends[:max(1, keep)]


# ----------------------------------------------------------------------------- the buffer

def render_buffer(cfg: RenderConfig) -> dict:
    """Render ``cfg.data``'s states into a new replay buffer at ``cfg.out``; returns a summary dict."""
    import zarr

    arrays, ends, _ = read_states(cfg.data)
    ends = whole_episodes(ends, cfg.limit)
    n = int(ends[-1])
    out = Path(cfg.out)
    if out.exists():
        raise DatasetError(f"--out {out} exists; remove it or choose another path")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    root = zarr.open_group(str(partial), mode="w", zarr_format=2)
    for key, values in arrays.items():
        root.create_array(f"data/{key}", data=np.ascontiguousarray(values[:n]))
    root.create_array("meta/episode_ends", data=np.asarray(ends, dtype=np.int64))
    img = root.create_array("data/img", shape=(n, cfg.size, cfg.size, 3), dtype="uint8",
                            chunks=(min(CHUNK, n), cfg.size, cfg.size, 3))
    states = arrays["state"][:n].astype(np.float64)
    tasks = [(s, states[s:s + CHUNK], cfg.size) for s in range(0, n, CHUNK)]
    t0 = time.perf_counter()
    from tqdm import tqdm
    bar = tqdm(total=n, unit="frame", desc="render", disable=not cfg.progress, dynamic_ncols=True)
    if cfg.workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(cfg.workers) as pool:  # fork: workers start in milliseconds
            for start, frames in pool.imap_unordered(_render_block, tasks):
                img[start:start + len(frames)] = frames
                bar.update(len(frames))
    else:
        for task in tasks:
            start, frames = _render_block(task)
            img[start:start + len(frames)] = frames
            bar.update(len(frames))
    bar.close()
    wall = time.perf_counter() - t0
    from importlib.metadata import version
    summary = {"source": str(cfg.data), "frames": n, "episodes": len(ends), "size": cfg.size,
               "workers": cfg.workers, "render_s": round(wall, 2), "ms_per_frame_per_worker":
               round(1000 * wall * cfg.workers / max(1, n), 3), "gym_pusht": version("gym-pusht"),
               "pymunk": version("pymunk"), "renderer": "trainer.evaluate.env.make_env observation (gym-pusht)"}
    root.attrs["rendered"] = summary
    os.replace(partial, out)
    return summary


# ----------------------------------------------------------------------------- agreement check

def check_against_dataset(data: Path, frames: int, report: Path, size: int = 96) -> dict:
    """Render ``frames`` states spread evenly over ``data`` in this process; compare with its data/img."""
    from trainer.data.images import read_images

    arrays, ends, root = read_states(data)
    if "img" not in root["data"]:
        raise DatasetError(f"{data} has no data/img to compare with")
    n = int(ends[-1])
    idx = np.unique(np.linspace(0, n - 1, max(1, min(frames, n))).round().astype(np.int64))
    ref = read_images(root["data/img"].oindex[idx], len(idx), "data/img", np.array([len(idx)]), data)
    if ref.shape[1:] != (size, size, 3):
        raise DatasetError(f"{data}: data/img frames are {list(ref.shape[1:])}, --size gives {[size, size, 3]}")
    env = _env(size)
    states = arrays["state"].astype(np.float64)
    render_state(env, states[idx[0]])  # warm-up (first draw sets up pygame surfaces)
    t0 = time.perf_counter()
    mine = np.stack([render_state(env, states[i]) for i in idx])
    per_frame = (time.perf_counter() - t0) / len(idx)
    diff = np.abs(mine.astype(np.int16) - ref.astype(np.int16))
    mad = diff.reshape(len(idx), -1).mean(axis=1)
    result = {
        "data": str(data), "frames_compared": int(len(idx)), "size": size,
        "mean_abs_diff": float(mad.mean()), "mean_abs_diff_p99_frame": float(np.percentile(mad, 99)),
        "mean_abs_diff_max_frame": float(mad.max()), "worst_frame": int(idx[int(mad.argmax())]),
        "pixels_differing_fraction": float((diff.max(axis=-1) > 0).mean()),
        "pixels_differing_by_more_than_32_fraction": float((diff.max(axis=-1) > 32).mean()),
        "max_abs_diff": int(diff.max()), "identical_frames": int((mad == 0).sum()),
        "ms_per_frame_one_process": round(1000 * per_frame, 3),
        "full_buffer_frames": n, "full_buffer_s_on_16_workers_estimate": round(n * per_frame / 16, 1),
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    _side_by_side(ref, mine, diff, idx, mad, report.with_suffix(".png"))
    return result


def _side_by_side(ref, mine, diff, idx, mad, path: Path, rows: int = 6) -> None:
    """Rows of dataset | render | |difference| x8 (the worst frame last), upscaled 3x."""
    from PIL import Image

    pick = list(np.linspace(0, len(idx) - 1, rows - 1).round().astype(int)) + [int(mad.argmax())]
    lines = []
    for i in pick:
        d = np.clip(diff[i].max(axis=-1, keepdims=True) * 8, 0, 255).astype(np.uint8).repeat(3, axis=-1)
        gap = np.full((ref.shape[1], 4, 3), 255, np.uint8)
        lines.append(np.concatenate([ref[i], gap, mine[i], gap, d], axis=1))
    grid = np.concatenate([np.concatenate([ln, np.full((4, ln.shape[1], 3), 255, np.uint8)]) for ln in lines])
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="render_pusht_images", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="replay buffer with data/state, data/action, meta")
    p.add_argument("--out", type=Path, help="replay buffer to write (data/img uint8 + the copied arrays)")
    p.add_argument("--workers", type=int, default=1, help="render processes (default 1)")
    p.add_argument("--size", type=int, default=96, help="frame side (default 96, Push-T's observation)")
    p.add_argument("--limit", type=int, default=0, help="first whole episodes totalling at most N frames (0: all)")
    p.add_argument("--check", type=int, default=0, metavar="N",
                   help="instead of --out: render N frames and compare with --data's data/img")
    p.add_argument("--report", type=Path, default=ROOT / "benchmarks/results/render_check",
                   help="--check: writes REPORT.json and REPORT.png")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _validate(args: argparse.Namespace) -> None:
    if (args.out is None) == (args.check <= 0):
        raise DatasetError("give exactly one of --out (render a buffer) and --check N (compare N frames)")
    for name, low, high in (("workers", 1, 256), ("size", 8, 1024), ("limit", 0, 10**9), ("check", 0, 10**7)):
        value = getattr(args, name)
        if not low <= value <= high:
            raise DatasetError(f"--{name} must be in {low}..{high}, got {value}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _validate(args)
        if args.check > 0:
            r = check_against_dataset(args.data, args.check, args.report, args.size)
            print(f"render check: {r['frames_compared']} frames, mean |diff| {r['mean_abs_diff']:.4f} of 255 "
                  f"(worst frame {r['mean_abs_diff_max_frame']:.3f}), {100 * r['pixels_differing_fraction']:.2f}% "
                  f"of pixels differ, {r['ms_per_frame_one_process']:.2f} ms/frame in one process "
                  f"-> {r['full_buffer_s_on_16_workers_estimate']:.0f} s for {r['full_buffer_frames']} frames on "
                  f"16 workers; {args.report.with_suffix('.json')}")
            return 0
        cfg = RenderConfig(data=args.data, out=args.out, workers=args.workers, size=args.size, limit=args.limit,
                           progress=not args.no_progress)
        s = render_buffer(cfg)
        print(f"rendered {s['frames']} frames ({s['episodes']} episodes) in {s['render_s']:.1f} s on "
              f"{s['workers']} workers -> {cfg.out}")
        return 0
    except (DatasetError, RuntimeError) as exc:  # RuntimeError: SimUnavailable (no gym-pusht), one line
        print(f"render_pusht_images: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("render_pusht_images: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
