"""Recorded regressions: the trace of one lock-step run, and reading and writing it.

A trace holds what a run of a package on a robot did, step by step: the device State each step
observed (joint positions and extra sensors), every plan (the observation history it was made
from, a digest of its camera frames, the selected candidate, its temporal-consistency distance and
the chunk), the action the policy asked for and the command sent. With it: the package's manifest
hash, the settings and seeds the run used (the latents follow from the seeds), and the platform it
ran on (which decides whether a replay must be bit-exact, runtime.hil_compare).

The file is a NumPy .npz (no pickles) with a JSON ``meta`` entry. Everything read is checked: a
truncated, oversized, malformed or non-finite trace is a one-line TraceError, never a traceback.
Store traces OUTSIDE package directories (the package loader refuses unlisted files): for the
shipped packages, ``exported_models/traces/<package>.<precision>.npz``.
"""
from __future__ import annotations

import json
import os
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRACE_FORMAT = "imle-hil-trace"
TRACE_VERSION = 1
MAX_FILE_BYTES = 64 << 20       # on disk
MAX_UNPACKED_BYTES = 256 << 20  # all arrays together, as declared by the archive (zip bombs)
MAX_ROWS = 100_000              # steps in one trace
MAX_DIM = 4096                  # any other axis
SOURCES = ("plan", "hold", "fault-hold", "bad-state")  # what a lock-step row can be (runtime.loop)
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "asimd", "asimddp", "i8mm",
             "sve")  # what onnxruntime's MLAS dispatches its kernels on

# name -> (dtype, number of axes); axis 0 is rows (steps) or plans
STEP_ARRAYS = {"episode": (np.int32, 1), "step": (np.int32, 1), "source": (np.str_, 1), "plan_id": (np.int32, 1),
               "positions": (np.float32, 2), "extras": (np.float32, 2), "command": (np.float32, 2),
               "has_command": (np.bool_, 1), "action": (np.float32, 2), "has_action": (np.bool_, 1)}
PLAN_ARRAYS = {"row": (np.int32, 1), "ok": (np.bool_, 1), "obs_state": (np.float32, 3), "image_sha": (np.str_, 1),
               "selected": (np.int32, 1), "distance": (np.float64, 1), "has_distance": (np.bool_, 1),
               "chunk": (np.float32, 3)}
META_KEYS = {"format", "version", "package", "manifest_sha256", "precision", "settings", "robot", "platform",
             "names", "episodes"}


class TraceError(ValueError):
    """A trace that cannot be read or used (one-line message)."""


@dataclass
class Trace:
    meta: dict[str, Any]
    steps: dict[str, np.ndarray]
    plans: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.steps["step"])

    def plan_at(self) -> dict[int, int]:
        """Row index -> index of the plan made at that row."""
        return {int(r): i for i, r in enumerate(self.plans["row"])}


def cpu_class() -> list[str]:
    """The CPU features onnxruntime picks kernels by (fp32 and int8 results may differ between classes)."""
    try:
        with open("/proc/cpuinfo") as fh:
            words = set(fh.read(1 << 20).split())
    except OSError:
        return []
    return sorted(words & set(CPU_FLAGS))


def this_platform() -> dict[str, Any]:
    """What decides whether a replay reproduces a run bit for bit."""
    import onnxruntime as ort

    from runtime.golden import int8_kernel_flags

    return {"machine": platform.machine(), "onnxruntime": ort.__version__, "numpy": np.__version__,
            "cpu_class": cpu_class(), "int8_kernels": int8_kernel_flags()}


# ---------------------------------------------------------------------------- writing
def save_trace(trace: Trace, path: str | Path) -> None:
    """Write atomically (a temporary file renamed over ``path``)."""
    validate(trace)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        meta = np.frombuffer(json.dumps(trace.meta, sort_keys=True, allow_nan=False).encode(), np.uint8)
    except (TypeError, ValueError) as exc:
        raise TraceError(f"trace meta cannot be written as JSON ({' '.join(str(exc).split())[:80]})") from None
    arrays = {"meta": meta, **{f"steps.{k}": v for k, v in trace.steps.items()},
              **{f"plans.{k}": v for k, v in trace.plans.items()}}
    tmp = path.parent / f".{path.name}.tmp"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- reading
def load_trace(path: str | Path) -> Trace:
    """Read and check a trace; TraceError (one line, naming the file) when it is not a usable one."""
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise TraceError(f"trace {path} is not a file")
    if size > MAX_FILE_BYTES:
        raise TraceError(f"trace {name} is {size} bytes; at most {MAX_FILE_BYTES}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            unpacked = sum(i.file_size for i in infos)
            if len(infos) > 64 or unpacked > MAX_UNPACKED_BYTES:
                raise TraceError(f"trace {name} unpacks to {len(infos)} entries, {unpacked} bytes; "
                                 f"at most 64 and {MAX_UNPACKED_BYTES}")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except TraceError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            RuntimeError) as exc:  # truncated, garbage, pickled object arrays, bad headers
        msg = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise TraceError(f"trace {name} is not a readable trace file ({msg})") from None
    if "meta" not in arrays:
        raise TraceError(f"trace {name} has no 'meta' entry: not an imle-hil trace")
    meta = _meta(arrays.pop("meta"), name)
    steps = {k[6:]: v for k, v in arrays.items() if k.startswith("steps.")}
    plans = {k[6:]: v for k, v in arrays.items() if k.startswith("plans.")}
    extra = sorted(k for k in arrays if not k.startswith(("steps.", "plans.")))
    if extra:
        raise TraceError(f"trace {name} has unknown entries {extra[:3]}")
    trace = Trace(meta, steps, plans)
    validate(trace, name)
    return trace


def _meta(raw: np.ndarray, name: str) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > (1 << 20):
        raise TraceError(f"trace {name}: 'meta' must be up to 1 MiB of JSON bytes")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise TraceError(f"trace {name}: 'meta' is not valid JSON ({' '.join(str(exc).split())[:80]})") from None
    if not isinstance(meta, dict):
        raise TraceError(f"trace {name}: 'meta' must be a JSON object")
    return meta


def _no_constant(text: str) -> None:
    raise ValueError(f"{text} is not allowed")


def _fail(where: str, field: str, msg: str) -> TraceError:
    return TraceError(f"trace {where}: field '{field}' {msg}")


def validate(trace: Trace, where: str = "") -> None:
    """Check a trace's structure, sizes and values (finite everywhere, indices in range)."""
    where = where or str(trace.meta.get("package", "?"))
    m = trace.meta
    if m.get("format") != TRACE_FORMAT:
        raise _fail(where, "meta.format", f"is {str(m.get('format'))[:40]!r}; expected {TRACE_FORMAT!r}")
    if m.get("version") != TRACE_VERSION:
        raise _fail(where, "meta.version", f"is {str(m.get('version'))[:20]}; this runtime reads {TRACE_VERSION}")
    missing = sorted(META_KEYS - set(m))
    if missing:
        raise _fail(where, "meta", f"lacks {', '.join(missing)}")
    sha = m["manifest_sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise _fail(where, "meta.manifest_sha256", "must be 64 lowercase hex digits")
    if m["precision"] not in ("fp32", "int8"):
        raise _fail(where, "meta.precision", f"is {str(m['precision'])[:20]!r}; expected fp32 or int8")
    for key in ("settings", "robot", "platform", "names"):
        if not isinstance(m[key], dict):
            raise _fail(where, f"meta.{key}", "must be an object")
    if not isinstance(m["episodes"], list) or not 0 < len(m["episodes"]) <= 1000:
        raise _fail(where, "meta.episodes", "must be a list of 1..1000 episodes")
    _check_arrays(trace.steps, STEP_ARRAYS, "steps", where)
    _check_arrays(trace.plans, PLAN_ARRAYS, "plans", where)
    n, p = trace.rows, len(trace.plans["row"])
    if n > MAX_ROWS:
        raise _fail(where, "steps", f"has {n} rows; at most {MAX_ROWS}")
    for group, arrays, count in (("steps", trace.steps, n), ("plans", trace.plans, p)):
        for k, a in arrays.items():
            if len(a) != count:
                raise _fail(where, f"{group}.{k}", f"has {len(a)} rows; expected {count}")
    for k in ("command", "action"):
        if not (trace.steps[k][~trace.steps[f"has_{k}"]] == 0).all():
            raise _fail(where, f"steps.{k}", "has values in rows marked as without one")
    bad = ~np.isin(trace.steps["source"], SOURCES)
    if bad.any():
        raise _fail(where, "steps.source", f"row {int(np.argmax(bad))} is {str(trace.steps['source'][bad][0])[:20]!r};"
                    f" expected one of {', '.join(SOURCES)}")
    rows = trace.plans["row"]
    if p and (rows.min() < 0 or rows.max() >= n or (np.diff(rows) <= 0).any()):
        raise _fail(where, "plans.row", f"must be increasing row indices in 0..{n - 1}")
    if p and not (trace.plans["distance"][~trace.plans["has_distance"]] == 0).all():
        raise _fail(where, "plans.distance", "has values in plans marked as without one")
    sel = trace.plans["selected"]
    cands = m["settings"].get("candidates")
    if not isinstance(cands, int) or isinstance(cands, bool) or not 1 <= cands <= MAX_DIM:
        raise _fail(where, "meta.settings.candidates", f"is {str(cands)[:20]}; expected 1..{MAX_DIM}")
    if p and (((sel < 0) | (sel >= cands)) & trace.plans["ok"]).any():
        raise _fail(where, "plans.selected", f"must lie in 0..{cands - 1} for plans that returned")


def _check_arrays(arrays: dict[str, np.ndarray], spec: dict[str, tuple[Any, int]], group: str, where: str) -> None:
    if set(arrays) != set(spec):
        missing, extra = sorted(set(spec) - set(arrays)), sorted(set(arrays) - set(spec))
        raise _fail(where, group, f"lacks {missing[:4]}" if missing else f"has unknown arrays {extra[:4]}")
    for k, (dt, ndim) in spec.items():
        a = arrays[k]
        ok_dtype = a.dtype.kind == "U" and a.dtype.itemsize <= 4 * 128 if dt is np.str_ else a.dtype == np.dtype(dt)
        if not ok_dtype or a.ndim != ndim:
            raise _fail(where, f"{group}.{k}", f"is {a.dtype} with {a.ndim} axes; expected "
                        f"{np.dtype(dt).name if dt is not np.str_ else 'text'} with {ndim}")
        if any(s > MAX_DIM for s in a.shape[1:]):
            raise _fail(where, f"{group}.{k}", f"has shape {list(a.shape)}; axes beyond the first at most {MAX_DIM}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise _fail(where, f"{group}.{k}", f"holds NaN or inf (at index {bad.tolist()})")
