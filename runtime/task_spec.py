"""A task definition: everything task-specific, read from a TOML file (or a manifest's ``task_spec``).

The trainer reads it to pick replay-buffer keys, observed columns, angle columns, horizons; the
exporter writes it into the manifest; the runtime maps observations and actions by its names and ends
an episode on its success signal. One dataclass for all of them, so a task is a file, not code.

    [task]                 name, period_s
    [horizons]             obs, pred, action
    [observation.state]    key, names (all columns), use (observed; default all), angles (subset of use)
    [[observation.images]] key, shape = [H, W, C] as stored, camera, channel_order ("RGB" default)
    [action]               key, names, joints (default = names), low, high (optional, both or neither)
    [success]              signal, threshold (optional: success when signal >= threshold)

Every check raises :class:`TaskSpecError` with one line naming the field and the value. No numpy, no
torch: this module runs on the robot.
"""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Bounds shared with runtime.package (which imports them from here): one place for each limit.
MAX_HORIZON = 1024
MAX_DIM = 1024  # columns of a state array, action dimensions
MAX_NAME_CHARS = 256
MAX_IMAGE_SIDE = 4096
MAX_IMAGES = 8
PERIOD_S_RANGE = (0.001, 10.0)
MAX_TASK_FILE_BYTES = 1 << 20
CHANNEL_ORDERS = ("RGB", "BGR", "GRAY")
# names travel through CSV headers and `--obs-map POLICY=ROBOT,...`: no ',', '=', spaces or quotes
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+-]*")
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # one zarr path component: data/<key>


class TaskSpecError(ValueError):
    """A task definition that is refused; the message names the field and the value."""


def _short(value: Any, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def _fail(fld: str, msg: str) -> None:
    raise TaskSpecError(f"task field '{fld}' {msg}")


def _check_name(value: Any, fld: str, pattern: re.Pattern = _NAME) -> str:
    if not isinstance(value, str):
        _fail(fld, f"must be a string, got {_short(value)}")
    if not 0 < len(value) <= MAX_NAME_CHARS:
        _fail(fld, f"must have 1..{MAX_NAME_CHARS} characters, got {len(value)}")
    if not pattern.fullmatch(value):
        _fail(fld, f"is {_short(value)}; use letters, digits and _ . : / + - (no spaces, ',' or '=')")
    return value


def _check_names(values: Any, fld: str, max_len: int = MAX_DIM) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        _fail(fld, f"must be a list of names, got {_short(values)}")
    if not 0 < len(values) <= max_len:
        _fail(fld, f"has {len(values)} names; must have 1..{max_len}")
    out = tuple(_check_name(v, f"{fld}[{i}]") for i, v in enumerate(values))
    seen: set[str] = set()
    for i, v in enumerate(out):
        if v in seen:
            _fail(f"{fld}[{i}]", f"{v!r} appears twice")
        seen.add(v)
    return out


def _check_int(value: Any, fld: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(fld, f"must be an integer, got {_short(value)}")
    if not lo <= value <= hi:
        _fail(fld, f"is {_short(value)}; must be in {lo}..{hi}")
    return value


def _check_float(value: Any, fld: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(fld, f"must be a number, got {_short(value)}")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond float range
        _fail(fld, f"is {_short(value)}; out of float range")
    if not math.isfinite(out):
        _fail(fld, f"is {out}; must be finite")
    return out


def _subset(values: tuple[str, ...], of: tuple[str, ...], fld: str, of_fld: str) -> None:
    for i, v in enumerate(values):
        if v not in of:
            _fail(f"{fld}[{i}]", f"{v!r} is not in {of_fld} ({', '.join(of)})")


# ---------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class TaskHorizons:
    obs: int  # To: observation frames the policy sees (the last one is "now")
    pred: int  # Tp: steps in a generated chunk
    action: int  # Ta: steps executed per plan

    def __post_init__(self) -> None:
        _check_int(self.obs, "horizons.obs", 1, MAX_HORIZON)
        _check_int(self.pred, "horizons.pred", self.obs, MAX_HORIZON)
        # executed steps start at row To-1 ("now") and must lie inside the chunk
        _check_int(self.action, "horizons.action", 1, self.pred - self.obs + 1)


@dataclass(frozen=True)
class StateObs:
    key: str
    names: tuple[str, ...]  # every column of data/<key>, in order
    use: tuple[str, ...] | None = None  # observed columns (None: all)
    angles: tuple[str, ...] = ()  # subset of use, wrap-around: the network sees (sin, cos)

    def __post_init__(self) -> None:
        _check_name(self.key, "observation.state.key", _KEY)
        names = _check_names(self.names, "observation.state.names")
        use = names if self.use is None else _check_names(self.use, "observation.state.use")
        angles = () if isinstance(self.angles, (list, tuple)) and not self.angles else \
            _check_names(self.angles, "observation.state.angles")
        _subset(use, names, "observation.state.use", "observation.state.names")
        _subset(angles, use, "observation.state.angles", "observation.state.use")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "use", use)
        object.__setattr__(self, "angles", angles)

    @property
    def columns(self) -> tuple[int, ...]:
        """Column indices of data/<key> that the policy observes, in `use` order."""
        return tuple(self.names.index(n) for n in self.use)

    @property
    def angle_dims(self) -> tuple[int, ...]:
        """Positions in the observed vector that are angles (ascending)."""
        return tuple(i for i, n in enumerate(self.use) if n in self.angles)


@dataclass(frozen=True)
class ImageObs:
    key: str
    shape: tuple[int, int, int]  # H, W, C as stored in data/<key>
    camera: str
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        _check_name(self.key, "observation.images.key", _KEY)
        if isinstance(self.shape, (str, bytes)) or not isinstance(self.shape, (list, tuple)) or len(self.shape) != 3:
            _fail("observation.images.shape", f"must be [H, W, C], got {_short(self.shape)}")
        h = _check_int(self.shape[0], "observation.images.shape[0]", 1, MAX_IMAGE_SIDE)
        w = _check_int(self.shape[1], "observation.images.shape[1]", 1, MAX_IMAGE_SIDE)
        c = _check_int(self.shape[2], "observation.images.shape[2]", 1, 4)
        object.__setattr__(self, "shape", (h, w, c))
        _check_name(self.camera, "observation.images.camera")
        if self.channel_order not in CHANNEL_ORDERS:
            _fail("observation.images.channel_order", f"is {_short(self.channel_order)}; expected one of "
                  f"{', '.join(CHANNEL_ORDERS)}")


@dataclass(frozen=True)
class TaskAction:
    key: str
    names: tuple[str, ...]
    joints: tuple[str, ...] | None = None  # robot joints commanded by each dimension (None: = names)
    low: tuple[float, ...] | None = None  # task limits: they can only narrow the robot's
    high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check_name(self.key, "action.key", _KEY)
        names = _check_names(self.names, "action.names")
        joints = names if self.joints is None else _check_names(self.joints, "action.joints")
        if len(joints) != len(names):
            _fail("action.joints", f"has {len(joints)} joints for {len(names)} action.names")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "joints", joints)
        if (self.low is None) != (self.high is None):
            _fail("action.low" if self.low is None else "action.high", "is missing: give both low and high, or neither")
        if self.low is None:
            return
        bounds = {}
        for part in ("low", "high"):
            values = getattr(self, part)
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
                _fail(f"action.{part}", f"must be a list of numbers, got {_short(values)}")
            if len(values) != len(names):
                _fail(f"action.{part}", f"has {len(values)} values for {len(names)} action.names")
            bounds[part] = tuple(_check_float(v, f"action.{part}[{i}]") for i, v in enumerate(values))
        for i, (lo, hi) in enumerate(zip(bounds["low"], bounds["high"])):
            if not lo < hi:
                _fail(f"action.low[{i}]", f"({lo}) must be below action.high[{i}] ({hi})")
        object.__setattr__(self, "low", bounds["low"])
        object.__setattr__(self, "high", bounds["high"])


@dataclass(frozen=True)
class Success:
    signal: str  # a name the robot reports each tick (a joint or an extra)
    threshold: float  # success when signal >= threshold

    def __post_init__(self) -> None:
        _check_name(self.signal, "success.signal")
        object.__setattr__(self, "threshold", _check_float(self.threshold, "success.threshold"))


# ---------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class TaskSpec:
    name: str
    period_s: float  # control period the demonstrations were recorded at
    horizons: TaskHorizons
    state: StateObs
    action: TaskAction
    images: tuple[ImageObs, ...] = ()
    success: Success | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "task.name")
        period = _check_float(self.period_s, "task.period_s")
        lo, hi = PERIOD_S_RANGE
        if not lo <= period <= hi:
            _fail("task.period_s", f"is {period}; must be in [{lo}, {hi}] s")
        object.__setattr__(self, "period_s", period)
        for name, tp in (("horizons", TaskHorizons), ("state", StateObs), ("action", TaskAction)):
            if not isinstance(getattr(self, name), tp):
                _fail(name, f"must be a {tp.__name__}, got {_short(getattr(self, name))}")
        images = tuple(self.images)
        if len(images) > MAX_IMAGES:
            _fail("observation.images", f"has {len(images)} entries; at most {MAX_IMAGES}")
        if not all(isinstance(im, ImageObs) for im in images):
            _fail("observation.images", "must hold ImageObs entries")
        object.__setattr__(self, "images", images)
        if self.success is not None and not isinstance(self.success, Success):
            _fail("success", f"must be a Success, got {_short(self.success)}")
        keys = [("observation.state.key", self.state.key), ("action.key", self.action.key)]
        keys += [(f"observation.images[{i}].key", im.key) for i, im in enumerate(images)]
        seen: dict[str, str] = {}
        for fld, key in keys:
            if key in seen:
                _fail(fld, f"{key!r} is also {seen[key]}: each replay-buffer key has one role")
            seen[key] = fld
        cams = [im.camera for im in images]
        for i, cam in enumerate(cams):
            if cams.index(cam) != i:
                _fail(f"observation.images[{i}].camera", f"{cam!r} appears twice")

    # -------------------------------------------------------------- views
    @property
    def obs_names(self) -> tuple[str, ...]:
        """Names of the observed state vector (the manifest's obs.state_names)."""
        return self.state.use

    # -------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        """The TOML-shaped dict (optional parts omitted), JSON-ready."""
        state: dict[str, Any] = {"key": self.state.key, "names": list(self.state.names), "use": list(self.state.use),
                                 "angles": list(self.state.angles)}
        obs: dict[str, Any] = {"state": state}
        if self.images:
            obs["images"] = [{"key": im.key, "shape": list(im.shape), "camera": im.camera,
                              "channel_order": im.channel_order} for im in self.images]
        action: dict[str, Any] = {"key": self.action.key, "names": list(self.action.names),
                                  "joints": list(self.action.joints)}
        if self.action.low is not None:
            action["low"], action["high"] = list(self.action.low), list(self.action.high)
        d: dict[str, Any] = {"task": {"name": self.name, "period_s": self.period_s},
                             "horizons": {"obs": self.horizons.obs, "pred": self.horizons.pred,
                                          "action": self.horizons.action},
                             "observation": obs, "action": action}
        if self.success is not None:
            d["success"] = {"signal": self.success.signal, "threshold": self.success.threshold}
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "TaskSpec":
        """Parse the TOML-shaped dict; unknown or missing keys and wrong types are refused."""
        top = _table(d, "", required=("task", "horizons", "observation", "action"), optional=("success",))
        task = _table(top["task"], "task", required=("name", "period_s"))
        hz = _table(top["horizons"], "horizons", required=("obs", "pred", "action"))
        obs = _table(top["observation"], "observation", required=("state",), optional=("images",))
        st = _table(obs["state"], "observation.state", required=("key", "names"), optional=("use", "angles"))
        images = obs.get("images", [])
        if not isinstance(images, list):
            _fail("observation.images", f"must be a list of tables ([[observation.images]]), got {_short(images)}")
        if len(images) > MAX_IMAGES:
            _fail("observation.images", f"has {len(images)} entries; at most {MAX_IMAGES}")
        ims = []
        for i, im in enumerate(images):
            t = _table(im, f"observation.images[{i}]", required=("key", "shape", "camera"), optional=("channel_order",))
            ims.append(ImageObs(t["key"], t["shape"], t["camera"], t.get("channel_order", "RGB")))
        act = _table(top["action"], "action", required=("key", "names"), optional=("joints", "low", "high"))
        success = None
        if "success" in top:
            s = _table(top["success"], "success", required=("signal", "threshold"))
            success = Success(s["signal"], s["threshold"])
        return cls(
            name=task["name"], period_s=task["period_s"],
            horizons=TaskHorizons(hz["obs"], hz["pred"], hz["action"]),
            state=StateObs(st["key"], st["names"], st.get("use"), st.get("angles", ())),
            action=TaskAction(act["key"], act["names"], act.get("joints"), act.get("low"), act.get("high")),
            images=tuple(ims), success=success)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "TaskSpec":
        """Read a task file; a missing, oversized, non-UTF-8 or malformed file is one TaskSpecError line."""
        p = Path(path)
        try:
            with open(p, "rb") as fh:
                data = fh.read(MAX_TASK_FILE_BYTES + 1)
        except FileNotFoundError:
            raise TaskSpecError(f"task file not found: {p}") from None
        except IsADirectoryError:
            raise TaskSpecError(f"task file {p} is a directory") from None
        except OSError as exc:
            raise TaskSpecError(f"cannot read task file {p} ({exc.strerror})") from None
        if len(data) > MAX_TASK_FILE_BYTES:
            raise TaskSpecError(f"task file {p} is larger than {MAX_TASK_FILE_BYTES} bytes")
        try:
            raw = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise TaskSpecError(f"task file {p}: not UTF-8 text (byte {exc.start})") from None
        except tomllib.TOMLDecodeError as exc:
            raise TaskSpecError(f"task file {p}: not valid TOML ({' '.join(str(exc).split())})") from None
        except RecursionError:
            raise TaskSpecError(f"task file {p}: not valid TOML (nested too deeply)") from None
        try:
            return cls.from_dict(raw)
        except TaskSpecError as exc:
            raise TaskSpecError(f"{p}: {exc}") from None

    @classmethod
    def derived(cls, name: str, state_names: list[str] | tuple[str, ...], action_names: list[str] | tuple[str, ...],
                obs: int, pred: int, action: int, period_s: float,
                image_shape: list[int] | tuple[int, ...] | None = None) -> "TaskSpec":
        """The task of a package exported before manifests carried one: its observed names (no other
        columns, no angles known), actions commanding joints of the same names, NO success signal."""
        images = ()
        if image_shape is not None:  # manifest layout [C, H, W]
            c, h, w = image_shape
            images = (ImageObs("img", (h, w, c), "camera"),)
        safe = name if isinstance(name, str) and _NAME.fullmatch(name or "") else "unnamed"
        return cls(name=safe, period_s=period_s, horizons=TaskHorizons(obs, pred, action),
                   state=StateObs("state", tuple(state_names)), action=TaskAction("action", tuple(action_names)),
                   images=images, success=None)


def _table(value: Any, path: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict:
    where = path or "the task file"
    if not isinstance(value, dict):
        if path:
            _fail(path, f"must be a table, got {_short(value)}")
        raise TaskSpecError(f"{where} must be a table, got {_short(value)}")
    for k in value:
        if k not in required and k not in optional:
            allowed = ", ".join((*required, *optional))
            shown = k if isinstance(k, str) and len(k) <= 64 and _KEY.fullmatch(k) else _short(k, 40)
            sub = f"{path}.{shown}" if path else shown
            raise TaskSpecError(f"task field '{sub}' is not known (allowed in {where}: {allowed})")
    for k in required:
        if k not in value:
            sub = f"{path}.{k}" if path else k
            if not path:
                raise TaskSpecError(f"task table [{k}] is missing")
            _fail(sub, "is missing")
    return value


__all__ = ["TaskSpec", "TaskSpecError", "TaskHorizons", "StateObs", "ImageObs", "TaskAction", "Success",
           "MAX_HORIZON", "MAX_DIM", "MAX_NAME_CHARS", "MAX_IMAGE_SIDE", "PERIOD_S_RANGE"]
