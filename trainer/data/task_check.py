"""Does a task file match a replay buffer? Checked from the arrays' shapes (nothing is loaded), before
training: a 7-column buffer trained as a 5-column task is a one-line error, not a silent policy."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


from runtime.task_spec import TaskSpec
from trainer.data.replay_buffer import DatasetError, open_buffer


@dataclass
class DataSummary:
    path: str
    episodes: int
    frames: int
    shapes: dict[str, tuple[int, ...]]  # data/<key> -> shape, every array in the buffer
    dtypes: dict[str, str]


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
