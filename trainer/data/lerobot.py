"""`imle-import-lerobot`: a LeRobotDataset (v2.1 or v3.0) -> a replay buffer (+ a starter task file).

    imle-import-lerobot DATASET_DIR --out buffer.zarr [--task-out task.toml]
                        [--images observation.images.top [--image-size 96x96]] [--force]

What is read (the dataset's own meta/info.json says where):

- v2.1: meta/episodes.jsonl (episode_index, length); one parquet table per episode at `data_path`
  (chunk = episode_index // chunks_size) and one mp4 per episode and camera at `video_path`.
- v3.0: meta/episodes/chunk-*/file-*.parquet (episode_index, length, data/chunk_index, data/file_index,
  dataset_from_index, dataset_to_index, videos/<key>/chunk_index|file_index|from_timestamp); data
  parquet files hold many episodes (rows by their global `index`), video files many episodes (an
  episode's frames start at its from_timestamp).

observation.state and action become data/state and data/action (float32), their feature names the
task's names; `fps` becomes period_s. Video frames (PyAV) are decoded only with --images, matched to
each row's timestamp. Every problem is one line (DatasetError): a missing file, a length that does not
add up, a NaN, an unknown codebase_version, a path template that leaves the dataset directory.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from trainer.data.replay_buffer import DatasetError

VERSIONS = ("v2.1", "v3.0")
STATE, ACTION = "observation.state", "action"
MAX_JSON_BYTES = 16 << 20
_SPEC = re.compile(r"0?\d{0,2}d")       # the only format specs a path template may use: {x:03d}, {x:d}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+-]*")
V21_FIELDS = {"episode_chunk", "episode_index", "video_key"}
V30_FIELDS = {"chunk_index", "file_index", "video_key"}


@dataclass
class Episode:
    index: int
    length: int
    data_file: Path
    rows: Optional[tuple[int, int]] = None            # v3: global index range [from, to) in data_file
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # key -> (file, first frame time)


@dataclass
class Imported:
    state: np.ndarray
    action: np.ndarray
    episode_ends: np.ndarray
    state_names: list[str]
    action_names: list[str]
    period_s: float
    version: str
    images: Optional[np.ndarray] = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- metadata
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"missing {path}")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise DatasetError(f"{path} is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not JSON ({' '.join(str(exc).split())[:100]})") from None


def _template(root: Path, info: dict, key: str, allowed: set[str], **values: Any) -> Path:
    """info[key] formatted with `values`, strictly: plain fields from `allowed`, integer specs only, and the
    result must stay inside the dataset directory."""
    tpl = info.get(key)
    if not isinstance(tpl, str) or not tpl or len(tpl) > 512:
        raise DatasetError(f"meta/info.json: {key} must be a path template string, got {str(tpl)[:60]!r}")
    try:
        parts = list(string.Formatter().parse(tpl))
    except ValueError as exc:
        raise DatasetError(f"meta/info.json: {key} {tpl!r} is not a valid template ({exc})") from None
    for _, fld, spec, conv in parts:
        if fld is None:
            continue
        if fld not in allowed or conv is not None or (spec and not _SPEC.fullmatch(spec)):
            raise DatasetError(f"meta/info.json: {key} {tpl!r} uses {{{fld}{'!' + conv if conv else ''}"
                               f"{':' + spec if spec else ''}}}; allowed: {', '.join(sorted(allowed))} with :0Nd")
        if fld != "video_key" and spec and not isinstance(values.get(fld), int):
            raise DatasetError(f"meta/info.json: {key}: {fld} must be an integer")
    text = tpl.format(**values)
    path = (root / text).resolve()
    if root.resolve() not in path.parents:
        raise DatasetError(f"meta/info.json: {key} {tpl!r} points outside the dataset ({text!r})")
    return path


def _feature(info: dict, key: str) -> tuple[int, list[str], Optional[str]]:
    """(dimension, names, note) of a 1-D float feature; generic names (and a note) when it names none usable."""
    feats = info.get("features")
    if not isinstance(feats, dict) or key not in feats or not isinstance(feats[key], dict):
        have = ", ".join(sorted(feats)) if isinstance(feats, dict) else "none"
        raise DatasetError(f"meta/info.json has no feature {key!r} (features: {have[:200]})")
    f = feats[key]
    shape = f.get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and 1 <= shape[0] <= 1024):
        raise DatasetError(f"meta/info.json: feature {key} has shape {str(shape)[:40]}; expected [n], 1 <= n <= 1024")
    n = shape[0]
    raw = f.get("names")
    if isinstance(raw, dict) and len(raw) == 1:  # older datasets: {"motors": [...]}
        raw = next(iter(raw.values()))
    prefix = "state" if key == STATE else "action"
    generic = [f"{prefix}_{i}" for i in range(n)]
    if not isinstance(raw, list) or len(raw) != n:
        return n, generic, f"{key} has no usable names ({str(raw)[:60]}): named {generic[0]}..{generic[-1]}"
    names = [str(x) for x in raw]
    bad = [x for x in names if not _NAME.fullmatch(x) or len(x) > 256]
    if bad or len(set(names)) != n:
        why = f"{bad[0]!r} is not a valid name" if bad else "names repeat"
        return n, generic, f"{key} names are not usable ({why}): named {generic[0]}..{generic[-1]}"
    return n, names, None


def _episodes_v21(root: Path, info: dict) -> list[Episode]:
    path = root / "meta" / "episodes.jsonl"
    if not path.is_file():
        raise DatasetError(f"missing {path}")
    chunks = info.get("chunks_size", 1000)
    if not isinstance(chunks, int) or chunks < 1:
        raise DatasetError(f"meta/info.json: chunks_size must be a positive integer, got {chunks!r}")
    out = []
    with open(path) as fh:
        for ln, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DatasetError(f"{path}:{ln}: not JSON") from None
            idx, length = (rec.get("episode_index"), rec.get("length")) if isinstance(rec, dict) else (None, None)
            if not (isinstance(idx, int) and idx >= 0 and isinstance(length, int) and length >= 1):
                raise DatasetError(f"{path}:{ln}: needs episode_index >= 0 and length >= 1, got {line.strip()[:80]}")
            data = _template(root, info, "data_path", V21_FIELDS, episode_chunk=idx // chunks, episode_index=idx)
            out.append(Episode(idx, length, data))
    return out


def _episodes_v30(root: Path, info: dict) -> list[Episode]:
    import pyarrow.parquet as pq

    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"missing {root / 'meta' / 'episodes'}/chunk-*/file-*.parquet")
    out = []
    for f in files:
        try:
            rows = pq.read_table(f).to_pylist()
        except Exception as exc:
            raise DatasetError(f"{f}: not a parquet table ({type(exc).__name__})") from None
        for rec in rows:
            need = ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                    "dataset_to_index")
            vals = [rec.get(k) for k in need]
            if not all(isinstance(v, int) and v >= 0 for v in vals):
                raise DatasetError(f"{f}: episode rows need integer {', '.join(need)}")
            idx, length, chunk, fidx, lo, hi = vals
            if length < 1 or hi - lo != length:
                raise DatasetError(f"{f}: episode {idx} has length {length} but rows {lo}..{hi}")
            data = _template(root, info, "data_path", V30_FIELDS, chunk_index=chunk, file_index=fidx)
            ep = Episode(idx, length, data, rows=(lo, hi))
            for k, v in rec.items():  # videos/<key>/from_timestamp etc.
                if k.startswith("videos/") and k.endswith("/from_timestamp"):
                    key = k[len("videos/"):-len("/from_timestamp")]
                    c, fi = rec.get(f"videos/{key}/chunk_index"), rec.get(f"videos/{key}/file_index")
                    if not (isinstance(c, int) and isinstance(fi, int) and isinstance(v, (int, float))
                            and math.isfinite(v) and v >= 0):
                        raise DatasetError(f"{f}: episode {idx}: bad video location for {key}")
                    ep.videos[key] = (_template(root, info, "video_path", V30_FIELDS, chunk_index=c, file_index=fi,
                                                video_key=key), float(v))
            out.append(ep)
    return out


# ---------------------------------------------------------------------------- data
def _vectors(table: Any, col: str, n: int, where: str) -> np.ndarray:
    import pyarrow as pa

    if col not in table.column_names:
        raise DatasetError(f"{where} has no column {col!r}")
    arr = table.column(col).combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise DatasetError(f"{where}: column {col} is {arr.type}, expected a list of numbers")
    if arr.null_count:
        raise DatasetError(f"{where}: column {col} has {arr.null_count} missing rows")
    lengths = np.diff(np.asarray(arr.offsets)) if hasattr(arr, "offsets") else np.full(len(arr), arr.type.list_size)
    if len(arr) and not np.all(lengths == n):
        raise DatasetError(f"{where}: column {col} has rows of {int(lengths[lengths != n][0])} values; the feature has "
                           f"{n}")
    try:
        values = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{where}: column {col} is not numeric ({type(exc).__name__})") from None
    values = values.reshape(len(arr), n)
    if not np.all(np.isfinite(values)):
        row = int(np.argmax(~np.isfinite(values).all(axis=1)))
        raise DatasetError(f"{where}: column {col} has a non-finite value in row {row}")
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise DatasetError(f"{where}: column {col} has a value beyond float32 range")
    return out


def _episode_table(ep: Episode, cache: dict) -> tuple[Any, str]:
    import pyarrow.parquet as pq

    if not ep.data_file.is_file():
        raise DatasetError(f"episode {ep.index}: missing {ep.data_file}")
    if ep.data_file not in cache:
        try:
            cache.clear()  # one file at a time in memory
            cache[ep.data_file] = pq.read_table(ep.data_file)
        except Exception as exc:
            raise DatasetError(f"{ep.data_file}: not a parquet table ({type(exc).__name__})") from None
    table = cache[ep.data_file]
    where = f"{ep.data_file.name} (episode {ep.index})"
    if ep.rows is not None:  # v3: this episode's rows by global index
        if "index" not in table.column_names:
            raise DatasetError(f"{where} has no column 'index'")
        idx = np.asarray(table.column("index").to_numpy())
        sel = np.nonzero((idx >= ep.rows[0]) & (idx < ep.rows[1]))[0]
        if len(sel) != ep.length or not np.array_equal(idx[sel], np.arange(*ep.rows)):
            raise DatasetError(f"{where}: rows {ep.rows[0]}..{ep.rows[1]} are not all there in order "
                               f"({len(sel)} of {ep.length} found)")
        table = table.take(sel)
    elif table.num_rows != ep.length:
        raise DatasetError(f"{where} has {table.num_rows} rows; meta/episodes.jsonl says {ep.length}")
    return table, where


def _timestamps(table: Any, where: str, n: int) -> np.ndarray:
    if "timestamp" not in table.column_names:
        raise DatasetError(f"{where} has no column 'timestamp' (needed to match video frames)")
    ts = np.asarray(table.column("timestamp").to_numpy(zero_copy_only=False), np.float64).reshape(-1)
    if len(ts) != n or not np.all(np.isfinite(ts)):
        raise DatasetError(f"{where}: timestamps must be finite, one per row")
    return ts


def _decode(path: Path, times: np.ndarray, fps: float, size: Optional[tuple[int, int]]) -> np.ndarray:
    """The frames of `path` nearest each time in `times` (seconds, ascending), RGB uint8 [n, H, W, 3]; every
    frame within half a frame period of its time, or DatasetError."""
    import av

    if not path.is_file():
        raise DatasetError(f"missing video {path}")
    tol = 0.5 / fps + 1e-4
    out: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if times[0] > tol:
                container.seek(int(max(0.0, times[0] - 1.0) / stream.time_base), stream=stream, backward=True)
            i, prev = 0, None  # prev: (time, image) of the frame before
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                img = frame.to_ndarray(format="rgb24")
                while i < len(times) and times[i] <= t + 1e-9:  # the nearer of this frame and the one before
                    cands = [(abs(t - times[i]), img)] + ([(abs(prev[0] - times[i]), prev[1])] if prev else [])
                    dist, best = min(cands, key=lambda c: c[0])
                    if dist > tol:
                        raise DatasetError(f"{path.name}: no frame within {tol:.4f} s of t = {times[i]:.4f} s")
                    out.append(best)
                    i += 1
                if i == len(times):
                    break
                prev = (t, img)
            while i < len(times) and prev is not None and abs(prev[0] - times[i]) <= tol:  # past the last frame
                out.append(prev[1])
                i += 1
    except DatasetError:
        raise
    except Exception as exc:  # av.error.*: a damaged or foreign file
        raise DatasetError(f"{path.name}: cannot decode ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
                           ) from None
    if len(out) != len(times):
        raise DatasetError(f"{path.name}: {len(times)} frames needed from t = {times[0]:.3f} s, the video has "
                           f"{len(out)}")
    frames = np.stack(out)
    if size is not None:
        from runtime.sensors import resize_nearest
        frames = np.stack([resize_nearest(f, size) for f in frames])
    return frames


def read_dataset(root: str | Path, images: Optional[str] = None,
                 image_size: Optional[tuple[int, int]] = None) -> Imported:
    """Read a LeRobotDataset directory (DatasetError, one line, for anything wrong)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"LeRobot dataset not found: {root}")
    info = _read_json(root / "meta" / "info.json")
    if not isinstance(info, dict):
        raise DatasetError("meta/info.json must be a JSON object")
    version = info.get("codebase_version")
    if version not in VERSIONS:
        raise DatasetError(f"meta/info.json: codebase_version {str(version)[:20]!r} is not supported "
                           f"({', '.join(VERSIONS)})")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and 0.1 <= fps <= 1000):
        raise DatasetError(f"meta/info.json: fps must be a number in 0.1..1000, got {str(fps)[:20]}")
    ns, s_names, n1 = _feature(info, STATE)
    na, a_names, n2 = _feature(info, ACTION)
    notes = [n for n in (n1, n2) if n]
    if images is not None:
        feat = (info.get("features") or {}).get(images)
        if not isinstance(feat, dict) or feat.get("dtype") != "video":
            kinds = [k for k, v in (info.get("features") or {}).items() if isinstance(v, dict)
                     and v.get("dtype") in ("video", "image")]
            raise DatasetError(f"--images {images!r} is not a video feature of this dataset (cameras: "
                               f"{', '.join(kinds) or 'none'}; parquet-stored 'image' features are not supported)")
    episodes = _episodes_v21(root, info) if version == "v2.1" else _episodes_v30(root, info)
    if not episodes:
        raise DatasetError(f"{root}: no episodes")
    total = info.get("total_episodes")
    if isinstance(total, int) and total != len(episodes):
        raise DatasetError(f"meta/info.json says total_episodes {total}; the episode metadata lists {len(episodes)}")
    episodes.sort(key=lambda e: e.index)
    states, actions, frames, cache = [], [], [], {}
    for ep in episodes:
        table, where = _episode_table(ep, cache)
        states.append(_vectors(table, STATE, ns, where))
        actions.append(_vectors(table, ACTION, na, where))
        if images is not None:
            ts = _timestamps(table, where, ep.length)
            if version == "v2.1":
                chunks = info.get("chunks_size", 1000)
                video, offset = _template(root, info, "video_path", V21_FIELDS, episode_chunk=ep.index // chunks,
                                          episode_index=ep.index, video_key=images), 0.0
            else:
                if images not in ep.videos:
                    raise DatasetError(f"meta/episodes: episode {ep.index} has no video location for {images}")
                video, offset = ep.videos[images]
            frames.append(_decode(video, ts + offset, float(fps), image_size))
    return Imported(np.concatenate(states), np.concatenate(actions), np.cumsum([e.length for e in episodes]),
                    s_names, a_names, 1.0 / float(fps), version, np.concatenate(frames) if frames else None, notes)


# ---------------------------------------------------------------------------- outputs
def starter_task_text(data: Imported, name: str, image_key: Optional[str]) -> str:
    """A task file for the imported buffer: names, period and action range from the dataset (CHECK them)."""
    q = json.dumps
    lo, hi = data.action.min(0).astype(np.float64), data.action.max(0).astype(np.float64)
    flat = hi <= lo
    lo[flat], hi[flat] = lo[flat] - 0.5, hi[flat] + 0.5
    joints_known = set(data.action_names) <= set(data.state_names)
    lines = [f"# Written by imle-import-lerobot from a LeRobotDataset {data.version}: CHECK before training.",
             "[task]", f"name = {q(name)}", f"period_s = {data.period_s!r}                # 1 / the dataset's fps", "",
             "[horizons]", "obs = 2", "pred = 16", "action = 8", "",
             "[observation.state]", 'key = "state"', f"names = {q(data.state_names)}", "angles = []", ""]
    if data.images is not None and image_key is not None:
        h, w, c = data.images.shape[1:]
        lines += ["[[observation.images]]", f"key = {q(image_key)}", f"shape = [{h}, {w}, {c}]",
                  'camera = "camera"                   # CHECK: the camera\'s name', 'channel_order = "RGB"', ""]
    lines += ["[action]", 'key = "action"', f"names = {q(data.action_names)}",
              f"joints = {q(data.action_names)}" + ("" if joints_known else
                                                   "   # CHECK: the robot joint each dimension commands"),
              "# the data's range (a task limit can only narrow the robot's own):",
              f"low = {q([float(x) for x in lo])}", f"high = {q([float(x) for x in hi])}", ""]
    return "\n".join(lines)


def write_buffer(data: Imported, out: Path, image_key: str = "img") -> None:
    """Write to a temporary directory beside `out`, then rename: a failed import leaves no half buffer."""
    from trainer.data.replay_buffer import write_replay_buffer

    tmp = out.with_name(out.name + ".importing")
    shutil.rmtree(tmp, ignore_errors=True)
    arrays = {"state": data.state, "action": data.action}
    if data.images is not None:
        arrays[image_key] = data.images
    write_replay_buffer(tmp, arrays, data.episode_ends)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,4})x(\d{1,4})", text or "")
    if not m or not (0 < int(m.group(1)) <= 4096 and 0 < int(m.group(2)) <= 4096):
        raise argparse.ArgumentTypeError(f"--image-size takes HxW (e.g. 96x96), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="imle-import-lerobot", description="Convert a LeRobotDataset (v2.1, v3.0) "
                                "into a replay buffer and a starter task file.")
    p.add_argument("dataset", help="the dataset directory (meta/info.json inside)")
    p.add_argument("--out", required=True, help="replay buffer to write (.zarr)")
    p.add_argument("--task-out", default=None, help="starter task file to write (.toml)")
    p.add_argument("--images", default=None, metavar="FEATURE", help="decode this camera (e.g. observation.images.top)")
    p.add_argument("--image-size", type=_size, default=None, metavar="HxW", help="centre-crop and resize the frames")
    p.add_argument("--name", default=None, help="task name (default: the dataset directory's name)")
    p.add_argument("--force", action="store_true", help="overwrite --out / --task-out")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        for target in filter(None, (out, args.task_out and Path(args.task_out))):
            if target.exists() and not args.force:
                raise DatasetError(f"{target} exists (use --force to overwrite)")
        name = args.name or re.sub(r"[^A-Za-z0-9_-]", "_", Path(args.dataset).resolve().name) or "lerobot"
        if not _NAME.fullmatch(name):
            raise DatasetError(f"--name {name[:40]!r} is not a valid task name")
        try:
            data = read_dataset(args.dataset, args.images, args.image_size)
        except ImportError as exc:
            raise DatasetError(f"{exc.name or exc} is not installed: pip install -e '.[train]'") from None
        text = starter_task_text(data, name, "img" if args.images else None)
        from runtime.task_spec import TaskSpec, TaskSpecError, tomllib
        try:
            spec = TaskSpec.from_dict(tomllib.loads(text))
        except TaskSpecError as exc:
            raise DatasetError(f"the starter task is not valid: {exc}") from None
        write_buffer(data, out)
        if args.task_out:
            Path(args.task_out).write_text(text)
        for note in data.notes:
            print(f"imle-import-lerobot: note: {note}", file=sys.stderr)
        print(f"{out}: {len(data.episode_ends)} episodes, {len(data.state)} frames from a LeRobotDataset "
              f"{data.version}; state {len(data.state_names)}, action {len(data.action_names)}"
              + (f", images {list(data.images.shape[1:])}" if data.images is not None else "")
              + f", period {spec.period_s:g} s" + (f"; task file {args.task_out}" if args.task_out else ""))
    except DatasetError as exc:
        print(f"imle-import-lerobot: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"imle-import-lerobot: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
