"""Draw the emulated Push-T plant from logged states (pusher, T block, goal), and write a rollout GIF.

A visualisation only: it draws gym-pusht's geometry (512 x 512 workspace, T of two 120x30 / 30x90
boxes, goal at (256, 256, pi/4), pusher radius 15) with PIL, so it needs neither pygame nor gym-pusht.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

WORKSPACE = 512.0
GOAL_POSE = (256.0, 256.0, math.pi / 4)
_SCALE = 30.0
_T_PARTS = (  # body-frame vertices of the two boxes of the T (gym-pusht add_tee, scale 30, length 4)
    ((-60.0, 30.0), (60.0, 30.0), (60.0, 0.0), (-60.0, 0.0)),
    ((-15.0, 30.0), (-15.0, 120.0), (15.0, 120.0), (15.0, 30.0)),
)
AGENT_RADIUS = 15.0
COLORS = {"bg": (255, 255, 255), "goal": (144, 238, 144), "block": (119, 136, 153), "agent": (65, 105, 225),
          "target": (255, 0, 0), "text": (0, 0, 0)}


def t_polygons(x: float, y: float, angle: float) -> list[list[tuple[float, float]]]:
    c, s = math.cos(angle), math.sin(angle)
    return [[(x + c * vx - s * vy, y + s * vx + c * vy) for vx, vy in part] for part in _T_PARTS]


def render_frame(agent: Sequence[float], block: Sequence[float], size: int = 256,
                 target: Optional[Sequence[float]] = None, caption: str = "") -> np.ndarray:
    """One RGB frame [size, size, 3] uint8. agent = (x, y); block = (x, y, angle); target = command."""
    from PIL import Image, ImageDraw

    k = size / WORKSPACE
    img = Image.new("RGB", (size, size), COLORS["bg"])
    d = ImageDraw.Draw(img)
    for poly in t_polygons(*GOAL_POSE):
        d.polygon([(px * k, py * k) for px, py in poly], fill=COLORS["goal"])
    for poly in t_polygons(float(block[0]), float(block[1]), float(block[2])):
        d.polygon([(px * k, py * k) for px, py in poly], fill=COLORS["block"])
    ax, ay, r = float(agent[0]) * k, float(agent[1]) * k, AGENT_RADIUS * k
    d.ellipse([ax - r, ay - r, ax + r, ay + r], fill=COLORS["agent"])
    if target is not None and np.all(np.isfinite(target)):
        tx, ty, m = float(target[0]) * k, float(target[1]) * k, max(3.0, 6 * k)
        d.line([tx - m, ty, tx + m, ty], fill=COLORS["target"], width=max(1, int(k * 2)))
        d.line([tx, ty - m, tx, ty + m], fill=COLORS["target"], width=max(1, int(k * 2)))
    if caption:
        d.text((4, 4), caption, fill=COLORS["text"])
    return np.asarray(img)


def write_rollout_gif(path: Path, rows: Sequence, fps: float = 10.0, size: int = 256, every: int = 1) -> int:
    """GIF of per-step records (runtime.stats.StepRecord with positions = agent, extras = block pose +
    coverage). Returns the number of frames written (0 when there was nothing to draw)."""
    from PIL import Image

    frames = []
    for r in rows[::max(1, every)]:
        if len(r.positions) < 2 or len(r.extras) < 3:
            continue
        cov = float(r.extras[3]) if len(r.extras) > 3 else math.nan
        frames.append(Image.fromarray(render_frame(r.positions, r.extras[:3], size, r.command,
                                                   f"ep {r.episode} step {r.step} cov {cov:.2f}")))
    if not frames:
        return 0
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return len(frames)
