"""A replay buffer in Diffusion Policy's zarr layout, appended one episode at a time, crash-safe.

numpy only (no zarr package): the robot install records. The store is zarr format 2, uncompressed,
which `zarr.open_group` (trainer.data.load_replay_buffer) reads as any other replay buffer:

    .zgroup  .zattrs (what recorded it)
    data/<key>/.zarray + chunk files "i.0[.0...]"   [frames, ...] rows, chunked along frames only
    meta/episode_seeds                              [episodes] int64: the start seed of each episode
    meta/episode_ends                               [episodes] int64: exclusive end of each episode

Committing an episode: every row array gets its new rows first (chunk files written to a temporary
name and renamed over, then the array's .zarray shape renamed over), and meta/episode_ends last: its
.zarray rename is the commit. A recorder killed at any point (SIGKILL included) leaves at worst rows
past the last committed episode end, which readers never look at (they read up to episode_ends[-1])
and the next open trims. Only one writer at a time (an flock on a lock file in the buffer).
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

CHUNK_BYTES = 1 << 20          # about 1 MB per chunk
MAX_CHUNK_ROWS = 4096
META_ENDS, META_SEEDS = "meta/episode_ends", "meta/episode_seeds"
LOCK_NAME = ".imle-record.lock"
DTYPES = {"float32": "<f4", "float64": "<f8", "uint8": "|u1", "int64": "<i8"}
MAX_META_BYTES = 1 << 20


class BufferError(ValueError):
    """A replay buffer that cannot be appended to or changed (one line)."""


@dataclass(frozen=True)
class ArraySpec:
    """One data/<key> array: the shape of one row (frame) and its dtype name."""
    key: str
    row_shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise BufferError(f"data/{self.key}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(DTYPES[self.dtype])


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * itemsize)
    return int(max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // row_bytes)))


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


class _Array:
    """One uncompressed zarr v2 array chunked along axis 0 (rows)."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.name = name
        meta = self._read_meta()
        self.shape = tuple(meta["shape"])
        self.chunk = int(meta["chunks"][0])
        self.dtype = np.dtype(meta["dtype"])
        self.row_shape = self.shape[1:]

    def _read_meta(self) -> dict:
        p = self.dir / ".zarray"
        try:
            if p.stat().st_size > MAX_META_BYTES:
                raise BufferError(f"{p}: metadata larger than {MAX_META_BYTES} bytes")
            meta = json.loads(p.read_text())
        except FileNotFoundError:
            raise BufferError(f"{self.dir} has no .zarray: not an array") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BufferError(f"{p}: unreadable array metadata ({' '.join(str(exc).split())[:120]})") from None
        ok = (isinstance(meta, dict) and meta.get("zarr_format") == 2 and isinstance(meta.get("shape"), list)
              and isinstance(meta.get("chunks"), list) and len(meta["shape"]) == len(meta["chunks"]) >= 1
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in meta["shape"])
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in meta["chunks"]))
        if not ok:
            raise BufferError(f"{p}: not zarr v2 array metadata this recorder understands")
        if meta.get("compressor") is not None or meta.get("filters") not in (None, []) or meta.get("order") != "C":
            raise BufferError(f"{self.name} is compressed or filtered ({meta.get('compressor')}): imle-record appends "
                              "only to buffers it created; record into a new buffer")
        if meta.get("dimension_separator", ".") != "." or list(meta["chunks"][1:]) != list(meta["shape"][1:]):
            raise BufferError(f"{self.name}: chunked other than by rows; imle-record appends only to buffers it "
                              "created")
        if meta.get("dtype") not in DTYPES.values():
            raise BufferError(f"{self.name}: dtype {meta.get('dtype')!r} is not one of {', '.join(DTYPES.values())}")
        return meta

    @staticmethod
    def create(root: Path, name: str, row_shape: tuple[int, ...], dtype: np.dtype) -> "_Array":
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        rows = _chunk_rows(row_shape, dtype.itemsize)
        fill = 0.0 if dtype.kind == "f" else 0
        _write_json(d / ".zarray", {"zarr_format": 2, "shape": [0, *row_shape], "chunks": [rows, *row_shape],
                                    "dtype": dtype.str, "compressor": None, "fill_value": fill, "order": "C",
                                    "filters": None, "dimension_separator": "."})
        return _Array(root, name)

    def _chunk_path(self, i: int) -> Path:
        return self.dir / ".".join([str(i)] + ["0"] * len(self.row_shape))

    def _row_elems(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64))

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((max(0, stop - start), *self.row_shape), self.dtype)
        for i in range(start // self.chunk, (stop - 1) // self.chunk + 1 if stop > start else 0):
            c0 = i * self.chunk
            block = self._read_chunk(i)
            lo, hi = max(start, c0), min(stop, c0 + self.chunk)
            out[lo - start:hi - start] = block[lo - c0:hi - c0]
        return out

    def _read_chunk(self, i: int) -> np.ndarray:
        n = self.chunk * self._row_elems()
        p = self._chunk_path(i)
        try:
            flat = np.fromfile(p, dtype=self.dtype, count=n)
        except FileNotFoundError:
            flat = np.zeros(0, self.dtype)
        if flat.size != n:  # a missing chunk is fill (zeros); a short one is corrupt
            if p.exists():
                raise BufferError(f"{self.name}: chunk {p.name} has {flat.size} values, expected {n}")
            flat = np.zeros(n, self.dtype)
        return flat.reshape(self.chunk, *self.row_shape)

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Rows [start, start+len) (the chunks they touch are rewritten atomically); then the shape."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        stop = start + len(rows)
        for i in range(start // self.chunk, (stop - 1) // self.chunk + 1 if stop > start else 0):
            c0 = i * self.chunk
            block = self._read_chunk(i).copy() if c0 < start else np.zeros((self.chunk, *self.row_shape), self.dtype)
            lo, hi = max(start, c0), min(stop, c0 + self.chunk)
            block[lo - c0:hi - c0] = rows[lo - start:hi - start]
            _write_atomic(self._chunk_path(i), block.tobytes())
        self.set_length(stop)

    def set_length(self, n: int) -> None:
        meta = self._read_meta()
        meta["shape"] = [int(n), *self.row_shape]
        _write_json(self.dir / ".zarray", meta)
        self.shape = (int(n), *self.row_shape)


class ReplayBufferWriter:
    """Open (or create) a buffer for appending episodes. Use as a context manager (it holds a lock)."""

    def __init__(self, path: str | os.PathLike, arrays: Optional[list[ArraySpec]] = None,
                 attrs: Optional[Mapping[str, Any]] = None, create: bool = True) -> None:
        self.path = Path(path)
        self._lock_fh: Any = None
        exists = (self.path / ".zgroup").exists()
        if not exists and self.path.exists() and any(self.path.iterdir()):
            raise BufferError(f"{self.path} exists and is not a zarr replay buffer; choose a new --out")
        if not exists and not create:
            raise BufferError(f"replay buffer not found: {self.path}")
        if not exists and arrays is None:
            raise BufferError(f"{self.path}: a new buffer needs its array layout")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            if not exists:
                self._create(arrays or [], attrs or {})
            self._open(arrays)
        except BaseException:  # a refused buffer is not left locked
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    def _lock(self) -> None:
        self._lock_fh = open(self.path / LOCK_NAME, "a+")
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            self._lock_fh = None
            raise BufferError(f"{self.path} is being written by another recorder (lock {LOCK_NAME} is held)") from None

    def _create(self, arrays: list[ArraySpec], attrs: Mapping[str, Any]) -> None:
        for sub in (self.path, self.path / "data", self.path / "meta"):
            sub.mkdir(parents=True, exist_ok=True)
            _write_json(sub / ".zgroup", {"zarr_format": 2})
        _write_json(self.path / ".zattrs", dict(attrs))
        for spec in arrays:
            _Array.create(self.path, f"data/{spec.key}", tuple(spec.row_shape), spec.np_dtype)
        _Array.create(self.path, META_SEEDS, (), np.dtype("<i8"))
        _Array.create(self.path, META_ENDS, (), np.dtype("<i8"))  # last: a buffer with ends is complete

    def _open(self, expected: Optional[list[ArraySpec]]) -> None:
        for stale in self.path.rglob("*.tmp"):  # half-written files of an interrupted append (under our lock)
            stale.unlink(missing_ok=True)
        if not (self.path / META_ENDS / ".zarray").is_file():
            raise BufferError(f"{self.path} has no {META_ENDS}: not a replay buffer imle-record can append to")
        self.ends_array = _Array(self.path, META_ENDS)
        if self.ends_array.row_shape != ():
            raise BufferError(f"{self.path}: {META_ENDS} must be one-dimensional")
        data_dir = self.path / "data"
        keys = sorted(p.name for p in data_dir.iterdir() if (p / ".zarray").exists()) if data_dir.is_dir() else []
        self.arrays = {k: _Array(self.path, f"data/{k}") for k in keys}
        if expected is not None:
            want = {s.key: s for s in expected}
            if sorted(want) != keys:
                raise BufferError(f"{self.path} holds data/{', data/'.join(keys) or '(nothing)'} but this recording "
                                  f"writes data/{', data/'.join(sorted(want))}; record into a new buffer")
            for k, spec in want.items():
                a = self.arrays[k]
                if a.row_shape != tuple(spec.row_shape) or a.dtype != spec.np_dtype:
                    raise BufferError(f"{self.path}: data/{k} has rows of {list(a.row_shape)} {a.dtype} but this "
                                      f"recording writes {list(spec.row_shape)} {spec.np_dtype}")
        self.seeds_array = _Array(self.path, META_SEEDS) if (self.path / META_SEEDS / ".zarray").exists() else None
        self.episode_ends = self._read_ends()
        self._trim()

    def _read_ends(self) -> np.ndarray:
        ends = self.ends_array.read_rows(0, self.ends_array.shape[0]).astype(np.int64)
        if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
            raise BufferError(f"{self.path}: {META_ENDS} is not strictly increasing positive ({ends[:8].tolist()}...)")
        return ends

    def _trim(self) -> None:
        """Rows past the committed episodes are what an interrupted append left: drop them."""
        frames = self.n_frames
        for k, a in self.arrays.items():
            if a.shape[0] < frames:
                raise BufferError(f"{self.path}: data/{k} has {a.shape[0]} frames but {META_ENDS} says {frames}: "
                                  "the buffer is damaged")
            if a.shape[0] > frames:
                a.set_length(frames)
        if self.seeds_array is not None and self.seeds_array.shape[0] != self.n_episodes:
            if self.seeds_array.shape[0] < self.n_episodes:
                self.seeds_array = None  # not ours to repair: stop recording seeds rather than misalign them
            else:
                self.seeds_array.set_length(self.n_episodes)

    # ------------------------------------------------------------------ views
    @property
    def n_episodes(self) -> int:
        return int(len(self.episode_ends))

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    def specs(self) -> list[ArraySpec]:
        inv = {v: k for k, v in DTYPES.items()}
        return [ArraySpec(k, a.row_shape, inv[a.dtype.str]) for k, a in self.arrays.items()]

    # ------------------------------------------------------------------ changes
    def append_episode(self, data: Mapping[str, np.ndarray], seed: int = -1) -> int:
        """Append one episode (every data/<key> array, same number of rows >= 1, finite); returns its index."""
        if sorted(data) != sorted(self.arrays):
            raise BufferError(f"episode has arrays {', '.join(sorted(data))}; the buffer has "
                              f"{', '.join(sorted(self.arrays))}")
        lengths = {k: len(np.asarray(v)) for k, v in data.items()}
        n = next(iter(lengths.values())) if lengths else 0
        if n < 1 or any(v != n for v in lengths.values()):
            raise BufferError(f"episode arrays must have the same number of rows >= 1, got {lengths}")
        for k, v in data.items():
            arr = np.asarray(v)
            a = self.arrays[k]
            if arr.shape[1:] != a.row_shape:
                raise BufferError(f"episode data/{k} has rows of {list(arr.shape[1:])}, the buffer {list(a.row_shape)}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise BufferError(f"episode data/{k} holds a non-finite value: not stored")
            if a.dtype.kind == "u" and (arr.min() < 0 or arr.max() > 255):
                raise BufferError(f"episode data/{k} has values outside 0..255 for a uint8 array")
        start = self.n_frames
        for k, v in data.items():
            self.arrays[k].write_rows(start, np.asarray(v))
        if self.seeds_array is not None:
            self.seeds_array.write_rows(self.n_episodes, np.asarray([seed], np.int64))
        ends = np.append(self.episode_ends, np.int64(start + n))
        self.ends_array.write_rows(len(ends) - 1, ends[-1:])  # the commit: episode_ends' shape grows last
        self.episode_ends = ends
        return self.n_episodes - 1

    def discard_last(self) -> int:
        """Drop the last stored episode (episode_ends first: the commit), then trim the rows; its length."""
        if self.n_episodes == 0:
            raise BufferError(f"{self.path} has no episode to discard")
        start = int(self.episode_ends[-2]) if self.n_episodes > 1 else 0
        length = self.n_frames - start
        self.ends_array.set_length(self.n_episodes - 1)
        self.episode_ends = self.episode_ends[:-1]
        self._trim()
        return length

    def seeds(self) -> Optional[np.ndarray]:
        if self.seeds_array is None:
            return None
        return self.seeds_array.read_rows(0, self.n_episodes).astype(np.int64)

    def close(self) -> None:
        if self._lock_fh is not None:
            try:
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            finally:
                self._lock_fh.close()
                self._lock_fh = None

    def __enter__(self) -> "ReplayBufferWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_attrs(path: str | os.PathLike) -> dict:
    """The buffer's .zattrs (what recorded it); {} when absent or unreadable."""
    p = Path(path) / ".zattrs"
    try:
        if p.stat().st_size > MAX_META_BYTES:
            return {}
        out = json.loads(p.read_text())
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
        return {}


__all__ = ["ArraySpec", "BufferError", "ReplayBufferWriter", "read_attrs"]
