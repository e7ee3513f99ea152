"""Does a task file match a replay buffer? Checked from the arrays' shapes (nothing is loaded), before
training: a 7-column buffer trained as a 5-column task is a one-line error, not a silent policy."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.task_spec import TaskSpec
from trainer.data.replay_buffer import DatasetError


@dataclass
class DataSummary:
    path: str
    episodes: int
    frames: int
    shapes: dict[str, tuple[int, ...]]  # data/<key> -> shape, every array in the buffer
    dtypes: dict[str, str]


def open_buffer(path: str | os.PathLike):
    """The zarr group of a replay buffer and its episode ends (DatasetError when it is not one)."""
    import zarr  # train-side dependency

    p = Path(path)
    if not p.exists():
        raise DatasetError(f"replay buffer not found: {p}")
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
    if "data" not in root:
        raise DatasetError(f"{p} has no data/ group: not a Diffusion Policy replay buffer")
    return root, ends


def summarize(path: str | os.PathLike) -> DataSummary:
    root, ends = open_buffer(path)
    arrays = {k: root[f"data/{k}"] for k in sorted(root["data"].keys())}
    return DataSummary(path=str(path), episodes=len(ends), frames=int(ends[-1]),
                       shapes={k: tuple(int(n) for n in a.shape) for k, a in arrays.items()},
                       dtypes={k: str(a.dtype) for k, a in arrays.items()})


def check_task_data(spec: TaskSpec, path: str | os.PathLike, trainer: bool = True) -> DataSummary:
    """DatasetError (one line naming the task field and both values) when ``spec`` does not describe the
    buffer at ``path``; ``trainer``: also refuse what the trainer cannot train (several cameras, not RGB)."""
    s = summarize(path)
    name = Path(path).name
    have = ", ".join(s.shapes) or "nothing"

    def array(fld: str, key: str) -> tuple[int, ...]:
        if key not in s.shapes:
            raise DatasetError(f"task {spec.name}: {fld} is {key!r} but {name} has no data/{key} (it has: {have})")
        shape = s.shapes[key]
        if shape[0] < s.frames:
            raise DatasetError(f"{name}: data/{key} has {shape[0]} frames but meta/episode_ends says {s.frames}")
        return shape

    for fld, key, names in (("observation.state", spec.state.key, spec.state.names),
                            ("action", spec.action.key, spec.action.names)):
        shape = array(f"{fld}.key", key)
        if len(shape) != 2:
            raise DatasetError(f"task {spec.name}: data/{key} in {name} has shape {list(shape)}; {fld} needs "
                               "[frames, columns]")
        if shape[1] != len(names):
            raise DatasetError(f"task {spec.name}: {fld}.names has {len(names)} names but data/{key} in {name} "
                               f"has {shape[1]} columns")
    for i, im in enumerate(spec.images):
        shape = array(f"observation.images[{i}].key", im.key)
        if list(shape[1:]) != list(im.shape):
            raise DatasetError(f"task {spec.name}: observation.images[{i}].shape is {list(im.shape)} but data/"
                               f"{im.key} in {name} has frames of {list(shape[1:])}")
    if trainer:
        if len(spec.images) > 1:
            raise DatasetError(f"task {spec.name}: observation.images has {len(spec.images)} cameras; the trainer "
                               "trains on one")
        for i, im in enumerate(spec.images):
            if im.shape[2] != 3 or im.channel_order != "RGB":
                raise DatasetError(f"task {spec.name}: observation.images[{i}] is {im.shape[2]}-channel "
                                   f"{im.channel_order}; the trainer's image encoder takes 3-channel RGB")
    return s
