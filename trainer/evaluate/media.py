"""Rollout media: GIFs of recorded episodes and a PNG grid of final frames."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from trainer.evaluate.env import SIM_EXTRA


def _imageio():
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise RuntimeError(f"imageio is not installed: {SIM_EXTRA}") from None
    return imageio


def write_gif(frames: list[np.ndarray], path: Path, fps: float = 10.0) -> Path:
    """Frames (HWC uint8) at the control rate (Push-T: 10 Hz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _imageio().mimsave(path, [np.asarray(f, dtype=np.uint8) for f in frames], duration=1.0 / fps, loop=0)
    return path


def frame_grid(frames: list[np.ndarray], cols: int = 10, pad: int = 2) -> np.ndarray:
    """Tile equally sized HWC frames into one image (white padding)."""
    if not frames:
        raise ValueError("no frames to tile")
    h, w, c = frames[0].shape
    cols = max(1, min(cols, len(frames)))
    rows = math.ceil(len(frames) / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k, f in enumerate(frames):
        r, q = divmod(k, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = f
    return grid


def label(frame: np.ndarray, text: str, good: bool) -> np.ndarray:
    """A coloured bar (green: success, red: not) with the text, under the frame."""
    import cv2  # a gym-pusht dependency

    h, w, _ = frame.shape
    bar = np.full((max(14, h // 10), w, 3), (40, 160, 60) if good else (190, 50, 50), dtype=np.uint8)
    scale = bar.shape[0] / 30
    cv2.putText(bar, text, (3, bar.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([np.asarray(frame, np.uint8), bar], axis=0)


def write_final_grid(finals: list[tuple[np.ndarray, str, bool]], path: Path, cols: int = 10,
                     size: int = 128) -> Path:
    """PNG of the final frame of each episode, labelled with (text, success)."""
    import cv2

    tiles = [label(cv2.resize(np.asarray(f, np.uint8), (size, size), interpolation=cv2.INTER_AREA), t, ok)
             for f, t, ok in finals]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _imageio().imwrite(path, frame_grid(tiles, cols))
    return path
