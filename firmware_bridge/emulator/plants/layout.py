"""Which joints an emulated robot has, read from a policy package's manifest or a task file.

firmware_bridge never imports runtime, so this reads the few fields it needs itself (the TaskSpec
layout of contract #17: `[action] names/joints/low/high`, `[observation.state] names/use`, images,
`[success] signal`, `[task] period_s`), strictly: a field of the wrong type is a one-line LayoutError.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_FILE_BYTES = 16 * 1024 * 1024  # a manifest with evaluation records is ~100 kB; anything far larger is not one
MAX_JOINTS = 32                    # one Capabilities frame holds ~25 short-named joints (checked exactly later)


class LayoutError(ValueError):
    """A manifest or task file that cannot describe an emulated robot (one line)."""


@dataclass(frozen=True)
class JointLayout:
    """The robot a policy expects: the joints it commands (with limits) and the names it observes."""
    joint_names: tuple[str, ...]
    lower: Optional[tuple[float, ...]] = None   # None: the source gave no limits (CLI options must)
    upper: Optional[tuple[float, ...]] = None
    observed: tuple[str, ...] = ()              # state names the policy observes
    images: tuple[str, ...] = ()                # image keys the policy observes
    success_signal: Optional[str] = None
    period_s: Optional[float] = None
    task: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        names = self.joint_names
        if not 1 <= len(names) <= MAX_JOINTS:
            raise LayoutError(f"{self.source}: the emulator needs 1..{MAX_JOINTS} joints, got {len(names)}")
        for name in names:
            if not isinstance(name, str) or not name or len(name.encode()) > 255:
                raise LayoutError(f"{self.source}: joint name {name!r} must be a non-empty string of <= 255 bytes")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise LayoutError(f"{self.source}: duplicate joint names {dup}")
        if (self.lower is None) != (self.upper is None):
            raise LayoutError(f"{self.source}: give both lower and upper limits, or neither")
        if self.lower is not None and self.upper is not None:
            check_limits(names, self.lower, self.upper, self.source)
        if self.period_s is not None and not (math.isfinite(self.period_s) and 0 < self.period_s <= 60):
            raise LayoutError(f"{self.source}: period_s must be in (0, 60], got {self.period_s}")

    def unserved(self) -> tuple[str, ...]:
        """Observed state names that are not joints (a joints-only plant cannot report them)."""
        return tuple(n for n in self.observed if n not in self.joint_names)


def check_limits(names: tuple[str, ...], lower: Any, upper: Any, source: str) -> None:
    if len(lower) != len(names) or len(upper) != len(names):
        raise LayoutError(f"{source}: {len(names)} joints but {len(lower)} lower and {len(upper)} upper limits")
    for name, lo, hi in zip(names, lower, upper):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise LayoutError(f"{source}: joint {name} limits [{lo}, {hi}] must be finite with lower < upper")


def _get(d: Any, path: str, kind: type | tuple, source: str, default: Any = None) -> Any:
    """d[a][b]... for path 'a.b'; default when absent; LayoutError for the wrong type."""
    cur = d
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    if cur is None:
        return default
    if not isinstance(cur, kind) or isinstance(cur, bool) and kind is not bool:
        raise LayoutError(f"{source}: {path} must be {_kind(kind)}, got {_short(cur)}")
    return cur


def _kind(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({list: "a list", dict: "a table", str: "a string", int: "a number", float: "a number"}
                       .get(k, k.__name__) for k in kinds)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names(d: Any, path: str, source: str) -> Optional[tuple[str, ...]]:
    values = _get(d, path, list, source)
    if values is None:
        return None
    if len(values) > 4096 or not all(isinstance(v, str) for v in values):
        raise LayoutError(f"{source}: {path} must be a list of strings, got {_short(values)}")
    return tuple(values)


def _floats(d: Any, path: str, source: str) -> Optional[tuple[float, ...]]:
    values = _get(d, path, list, source)
    if values is None:
        return None
    if len(values) > 4096 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise LayoutError(f"{source}: {path} must be a list of numbers, got {_short(values)}")
    return tuple(float(v) for v in values)


def layout_from_task(d: Any, source: str, low_high: Optional[tuple[Any, Any]] = None) -> JointLayout:
    """From a task dict (a task TOML, or a manifest's task_spec). `low_high`: the package's action range,
    used when the task gives no limits of its own."""
    if not isinstance(d, dict):
        raise LayoutError(f"{source}: a task must be a table, got {_short(d)}")
    names = _names(d, "action.names", source)
    if names is None:
        raise LayoutError(f"{source}: the task has no action.names")
    joints = _names(d, "action.joints", source) or names
    if len(joints) != len(names):
        raise LayoutError(f"{source}: action.joints has {len(joints)} names, action.names {len(names)}")
    low, high = _floats(d, "action.low", source), _floats(d, "action.high", source)
    if low is None and high is None and low_high is not None:
        low, high = low_high
    state_names = _names(d, "observation.state.names", source) or ()
    observed = _names(d, "observation.state.use", source) or state_names
    images = _get(d, "observation.images", list, source, [])
    image_keys = tuple(str(_get(img, "key", str, source, "?")) for img in images)
    period = _get(d, "task.period_s", (int, float), source)
    return JointLayout(joints, low, high, observed, image_keys, _get(d, "success.signal", str, source),
                       None if period is None else float(period), _get(d, "task.name", str, source, ""), source)


def layout_from_manifest(m: Any, source: str) -> JointLayout:
    """From a package manifest: its task_spec when present (joints, limits), else its obs/action names."""
    if not isinstance(m, dict):
        raise LayoutError(f"{source}: a manifest must be a JSON object, got {_short(m)}")
    low, high = _floats(m, "action.low", source), _floats(m, "action.high", source)
    low_high = (low, high) if low is not None and high is not None else None
    spec = m.get("task_spec")
    if spec is not None:
        layout = layout_from_task(spec, source, low_high)
        if layout.period_s is None:
            period = _get(m, "control.period_s", (int, float), source)
            layout = _replace(layout, period_s=None if period is None else float(period))
        return layout
    names = _names(m, "action.names", source)
    if names is None:
        raise LayoutError(f"{source}: the manifest has neither task_spec nor action.names")
    observed = _names(m, "obs.state_names", source) or ()
    images = ("image",) if _get(m, "obs.image_shape", list, source) else ()
    period = _get(m, "control.period_s", (int, float), source)
    return JointLayout(names, low, high, observed, images, None, None if period is None else float(period),
                       _get(m, "task", str, source, ""), source)


def _replace(layout: JointLayout, **changes: Any) -> JointLayout:
    from dataclasses import replace
    return replace(layout, **changes)


def _read(path: str, what: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise LayoutError(f"{path}: {size} bytes is too large for a {what} (limit {MAX_FILE_BYTES})")
        with open(path, "rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise LayoutError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_layout(path: str) -> JointLayout:
    """A package directory (its manifest.json), a manifest .json file, or a task .toml file."""
    if os.path.isdir(path):
        path = os.path.join(path, "manifest.json")
    if path.endswith(".toml"):
        try:
            data = tomllib.loads(_read(path, "task file").decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise LayoutError(f"{path}: not a TOML task file ({str(exc).splitlines()[0]})") from None
        return layout_from_task(data, path)
    try:
        data = json.loads(_read(path, "manifest"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LayoutError(f"{path}: not a JSON manifest ({str(exc).splitlines()[0][:120]})") from None
    return layout_from_manifest(data, path)
