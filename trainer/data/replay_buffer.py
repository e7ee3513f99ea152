"""Read Diffusion Policy's zarr replay buffer (``data/<key>`` arrays + ``meta/episode_ends``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_PUSHT_PATH = Path(__file__).resolve().parents[2].parent / "shared/data/pusht/pusht_cchi_v7_replay.zarr"
PUSHT_ENV_VAR = "IMLE_PUSHT_ZARR"


class DatasetError(ValueError):
    """A user-facing problem with the data (missing file, wrong layout, empty subset)."""


def default_pusht_path() -> Path:
    """The Push-T replay buffer: ``$IMLE_PUSHT_ZARR`` if set, else ``../shared/data/pusht/...``."""
    return Path(os.environ.get(PUSHT_ENV_VAR, str(DEFAULT_PUSHT_PATH)))


@dataclass
class ReplayBuffer:
    """Flat arrays of all frames plus exclusive episode end indices."""

    data: dict[str, np.ndarray]
    episode_ends: np.ndarray
    path: str = ""

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def episode_bounds(self, i: int) -> tuple[int, int]:
        start = 0 if i == 0 else int(self.episode_ends[i - 1])
        return start, int(self.episode_ends[i])


def open_buffer(path: str | os.PathLike, hint: str = ""):
    """The zarr group of a replay buffer and its episode ends (DatasetError, one line, when it is not one)."""
    import zarr  # train-side dependency

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"replay buffer not found: {p}{hint}")
    try:
        root = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # zarr raises several types for a non-group path
        raise DatasetError(f"{p} is not a zarr group ({type(exc).__name__}: {exc})") from None
    try:
        ends = np.asarray(root["meta/episode_ends"][:], dtype=np.int64)
    except KeyError:
        raise DatasetError(f"{p} has no meta/episode_ends: not a Diffusion Policy replay buffer") from None
    if ends.ndim != 1 or len(ends) == 0 or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise DatasetError(f"{p}: meta/episode_ends must be a non-empty strictly increasing list of positive ints")
    return root, ends


def load_replay_buffer(path: str | os.PathLike, keys: tuple[str, ...] = ("state", "action"),
                       image_keys: tuple[str, ...] = ("img",)) -> ReplayBuffer:
    """Load ``keys`` from a Diffusion-Policy zarr replay buffer; ``image_keys`` are kept as uint8.

    Raises DatasetError with a one-line message if the file or its layout is wrong.
    """
    from trainer.data.images import read_images  # images.py imports this module's errors

    p = Path(path)
    root, ends = open_buffer(p, hint=f" (set --data or ${PUSHT_ENV_VAR})")
    data: dict[str, np.ndarray] = {}
    for key in keys:
        try:
            arr = root[f"data/{key}"]
        except KeyError:
            have = sorted(k for k in root["data"].keys()) if "data" in root else []
            raise DatasetError(f"{p} has no data/{key} (it has: {', '.join(have) or 'nothing'})") from None
        if arr.shape[0] < ends[-1]:
            raise DatasetError(f"{p}: data/{key} has {arr.shape[0]} frames but episode_ends says {ends[-1]}")
        if key in image_keys:  # decoded block by block into uint8: never the whole buffer as floats
            data[key] = read_images(arr, int(ends[-1]), f"data/{key}", ends, p)
            continue
        with np.errstate(over="ignore"):  # an overflow becomes inf, which the next line names
            values = np.asarray(arr[: int(ends[-1])], dtype=np.float32)
        check_finite(values, ends, f"data/{key}", p)  # after the cast: 1e39 becomes inf here
        data[key] = values
    return ReplayBuffer(data=data, episode_ends=ends, path=str(p))


def check_finite(values: np.ndarray, episode_ends: np.ndarray, key: str, path: str | os.PathLike = "",
                 block: int = 1024, first_frame: int = 0) -> None:
    """DatasetError naming the episode and frame of the first NaN or inf in ``values`` [frames, ...]
    (checked in blocks of frames: an image buffer is gigabytes and a full mask would double it);
    ``first_frame``: the buffer frame of ``values[0]`` when ``values`` is a slice of the buffer."""
    for start in range(0, len(values), block):
        chunk = np.asarray(values[start:start + block])
        ok = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if ok.all():
            continue
        at = start + int(np.argmin(ok))
        frame = first_frame + at
        episode = int(np.searchsorted(episode_ends, frame, side="right"))
        first = 0 if episode == 0 else int(episode_ends[episode - 1])
        bad = chunk[at - start].reshape(-1)
        value = bad[~np.isfinite(bad)][0]
        where = f" in {path}" if path else ""
        raise DatasetError(f"{key}: non-finite value ({value}) in episode {episode} (frame {frame}, step "
                           f"{frame - first} of the episode){where}; fix or drop that episode")


def write_replay_buffer(path: str | os.PathLike, data: dict[str, np.ndarray], episode_ends: np.ndarray) -> None:
    """Write a replay buffer in the same layout (used by tests and by users recording demos)."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for key, values in data.items():
        root.create_array(f"data/{key}", data=np.asarray(values))
    root.create_array("meta/episode_ends", data=np.asarray(episode_ends, dtype=np.int64))
