"""Camera frames from a replay buffer, decoded chunk by chunk into one uint8 array.

Push-T's 25,650 frames of 96x96x3 are float32 on disk (2.8 GB decoded); reading them whole and
casting (as the loader did) peaked at about 6.5 GB for a 20-step run. Here each zarr chunk-aligned
block is decoded, checked and cast on its own, so the peak is the uint8 result (0.7 GB) plus one block.
Floats go to uint8 per batch only (trainer.models.crop / PolicyNetwork), never for the whole buffer.
"""
from __future__ import annotations

import os

import numpy as np

from trainer.data.replay_buffer import DatasetError, check_finite

FRAMES_PER_BLOCK = 1024  # rounded up to whole zarr chunks: ~113 MB of float32 96x96x3 per block


def _block(arr, target: int) -> int:
    chunk = int((getattr(arr, "chunks", None) or (target,))[0]) or target
    return max(chunk, (target // chunk) * chunk)


def read_images(arr, n_frames: int, key: str, episode_ends: np.ndarray, path: str | os.PathLike = "",
                block: int = FRAMES_PER_BLOCK) -> np.ndarray:
    """The first ``n_frames`` of the image array ``arr`` (zarr or numpy) as uint8 [F, H, W, 3].

    uint8 frames are taken as they are; float frames must be finite pixel values in 0..255 (Diffusion
    Policy stores them so) and are truncated to integers. Anything else is a one-line DatasetError naming ``key``.
    """
    where = f" in {path}" if path else ""
    shape = tuple(int(n) for n in arr.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise DatasetError(f"{key}{where} must be [frames, H, W, 3] (RGB, channels last), got {list(shape)}")
    if shape[1] < 1 or shape[2] < 1:
        raise DatasetError(f"{key}{where} has empty frames: {list(shape)}")
    dtype = np.dtype(arr.dtype)
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DatasetError(f"{key}{where} has dtype {dtype}; image frames must be uint8 or float pixel values 0..255")
    if shape[0] < n_frames:
        raise DatasetError(f"{key}{where} has {shape[0]} frames but meta/episode_ends says {n_frames}")
    out = np.empty((n_frames, *shape[1:]), dtype=np.uint8)
    step, peak = _block(arr, block), 0.0
    for start in range(0, n_frames, step):
        stop = min(n_frames, start + step)
        try:
            values = np.asarray(arr[start:stop])
        except Exception as exc:  # a truncated or corrupt chunk: zarr and the codecs raise their own types
            text = " ".join(str(exc).split())[:120]
            raise DatasetError(f"{key}{where}: frames {start}..{stop - 1} cannot be read ({type(exc).__name__}: "
                               f"{text})") from None
        if dtype == np.uint8:
            out[start:stop] = values
            continue
        check_finite(values, episode_ends, key, path, first_frame=start)  # names the episode and frame
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 255:
            bad = start + int(np.argmax(((values < 0) | (values > 255)).reshape(len(values), -1).any(axis=1)))
            raise DatasetError(f"{key}{where}: frame {bad} has pixel values outside 0..255 (min {low:g}, "
                               f"max {high:g} in frames {start}..{stop - 1}); store frames as 0..255")
        out[start:stop] = values  # truncated as the loader always did (Push-T's floats are whole numbers)
        peak = max(peak, high)
    if np.issubdtype(dtype, np.floating) and n_frames and peak <= 1.0:
        raise DatasetError(f"{key}{where}: every pixel value is in 0..1 (max {peak:g}); frames must be 0..255 "
                           "(multiply by 255 when recording)")
    return out
