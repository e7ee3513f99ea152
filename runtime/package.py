"""Model packages: the manifest dataclasses, loading, and verification against the ONNX graphs.

A package is a directory with ``manifest.json`` and one or more ONNX files. The runtime refuses a
package whose format version, hashes, shapes or names do not match, with a :class:`PackageError`
whose message names the field. This module runs on the robot: numpy and onnxruntime only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.task_spec import (MAX_DIM, MAX_HORIZON, MAX_IMAGE_SIDE, MAX_NAME_CHARS, PERIOD_S_RANGE, TaskSpec,
                               TaskSpecError)

FORMAT = "imle-policy-package"
FORMAT_VERSION = 1
METHODS = ("rs_imle", "diffusion", "flow_matching")
PRECISIONS = ("fp32", "int8")
SAMPLERS = ("ddpm", "ddim", "euler")
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # detached Ed25519 signature of manifest.json (runtime.signing)
EXTERNAL_DATA = "external_data"  # role of a file that holds a graph's external tensors (weights)

# Bounds on what a package may ask for: a hostile or broken package is refused at load with one line
# instead of exhausting memory, hanging the loop or widening what reaches the robot.
MAX_MANIFEST_BYTES = 1 << 20  # 1 MiB; the shipped manifest is 8 kB
MAX_JSON_DEPTH = 32  # nesting of [ and {; checked before json.loads can recurse
MAX_FILE_BYTES = 512 << 20  # per graph or external-data file (the paper-size fp32 graph is ~250 MB)
MAX_FILES = 16
MAX_CANDIDATES = 4096
MAX_COND_DIM = 1 << 16  # MAX_HORIZON, MAX_DIM (state_dim, action.dim), MAX_IMAGE_SIDE: runtime.task_spec
MAX_PLAN_ELEMENTS = 1 << 22  # candidates x pred x action.dim floats per plan (16 MiB)
MAX_SAMPLER_STEPS = 1000  # sampler.steps and sampler.train_steps (DDPM runs every train step)
MAX_TC_RESET_AFTER = 1_000_000
# sections that only record provenance and measurements (NaN is a legitimate "not measured" there)
INFORMATIONAL = ("training", "parity", "evaluation")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PackageError(ValueError):
    """A package that the runtime refuses; the message names the offending field."""


def check_candidates(candidates: int, pred: int, action_dim: int, field_name: str = "candidates") -> None:
    """Refuse a candidate count outside 1..MAX_CANDIDATES or a plan larger than MAX_PLAN_ELEMENTS floats
    (the manifest's default and a caller's override alike: 1e6 candidates once meant 5 GB, then a crash)."""
    if isinstance(candidates, bool) or not isinstance(candidates, int):
        raise PackageError(f"{field_name} must be an integer, got {candidates!r}")
    if not 1 <= candidates <= MAX_CANDIDATES:
        raise PackageError(f"{field_name} is {candidates}; must be in 1..{MAX_CANDIDATES}")
    if candidates * pred * action_dim > MAX_PLAN_ELEMENTS:
        raise PackageError(f"{field_name} is {candidates}: {candidates} x pred {pred} x action.dim {action_dim} = "
                           f"{candidates * pred * action_dim} values per plan, above {MAX_PLAN_ELEMENTS}")


def check_action_horizon(value: object, obs: int, pred: int) -> None:
    """A caller's Ta override: an integer in 1..pred-obs+1, the rows from the current time (index obs-1) to the
    plan's end, the rule the manifest's horizons.action is held to."""
    most = pred - obs + 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise PackageError(f"action_horizon must be an integer in 1..{most} (pred {pred} - obs {obs} + 1), "
                           f"got {value!r}")


# ---------------------------------------------------------------------------- manifest dataclasses
@dataclass
class ObsSpec:
    state_dim: int
    state_names: list[str]
    image_shape: list[int] | None = None  # [3, H, W] per frame when the policy sees a camera
    channel_order: str | None = None  # "RGB" for images; None otherwise
    image_dtype: str | None = None  # "uint8", values 0..255


@dataclass
class ActionSpec:
    dim: int
    names: list[str]
    low: list[float]  # limits seen in the training data (the action statistics)
    high: list[float]


@dataclass
class Horizons:
    obs: int  # To: observation frames the policy sees (the last one is "now")
    pred: int  # Tp: steps in a generated chunk
    action: int  # Ta: steps executed per plan


# what new RS-IMLE packages are exported with: IMLE Policy's Push-T evaluation re-draws the
# temporal-consistency reference every 5 plans (measured here in docs/benchmarks.md, "Sample efficiency")
TC_RESET_AFTER = 5


@dataclass
class ControlSpec:
    period_s: float
    candidates: int = 32
    temporal_consistency: bool = True
    # plans between re-draws of the temporal-consistency reference (a random candidate), so the policy
    # can leave a mode it has committed to; 0 = never (packages exported before this field)
    tc_reset_after: int = 0


@dataclass
class MinMaxStats:
    min: list[float]
    max: list[float]


@dataclass
class Normalization:
    state: MinMaxStats
    action: MinMaxStats


@dataclass
class FileEntry:
    name: str
    sha256: str
    precision: str  # fp32 | int8
    role: str = "generator"  # generator (rs_imle) | encoder | denoiser (baselines)
    quant_format: str | None = None  # how an int8 file was made, e.g. "qdq-u8s8-per-channel"
    layout: str | None = None  # how the U-Net's convolutions appear in the graph (informational)


@dataclass
class SamplerSpec:
    kind: str  # ddpm | ddim | euler
    steps: int
    train_steps: int = 100
    prediction: str = "epsilon"  # epsilon (diffusion) | velocity (flow matching)


@dataclass
class Training:
    dataset: str = ""
    episodes: list[int] = field(default_factory=list)
    steps: int = 0
    config: dict = field(default_factory=dict)
    code_version: str = ""
    command: str = ""  # the exact training command line, when the checkpoint recorded it


@dataclass
class LockstepReference:
    """In-process lock-step rollout of a shipped package, recorded on one class of CPU."""

    precision: str
    int8_kernels: list[str]  # CPU features that select onnxruntime's int8 kernels ([] = none of them)
    max_rewards: list[float]
    first_actions: list[list[float]]


@dataclass
class Evaluation:
    """Closed-loop score recorded after export (shipped packages), and the regression reference."""

    env: str  # e.g. gym_pusht/PushT-v0
    episodes: int
    seed: int  # episode i uses seed + i
    precision: str
    candidates: int
    score: float  # average over episodes of the maximum reward (coverage / 0.95, clipped)
    success_rate: float
    score_ci: list[float] = field(default_factory=list)
    # lock-step reference for the HIL regression test: per-episode max reward of the first
    # episodes and the first executed actions of episode 0, from the in-process rollout
    reference_episodes: int = 0
    reference_max_rewards: list[float] = field(default_factory=list)
    reference_first_actions: list[list[float]] = field(default_factory=list)
    # the same reference per (precision, int8 kernel class): int8 results depend on the CPU's dot-product
    # instructions (x86 VNNI or not, ARM dot product), so a machine checks against a reference of its own class
    references: list[LockstepReference] = field(default_factory=list)


@dataclass
class ErrorStats:
    max_abs: float  # raw action units
    mean_abs: float
    max_frac_of_range: float  # max_abs / (action high - low), worst dimension
    mean_frac_of_range: float
    p99_frac_of_range: float | None = None  # 99th percentile of the per-element fraction


@dataclass
class Parity:
    source: str = ""  # "held-out episodes [...]", "reserved slice", "random observations"
    observations: int = 0
    candidates: int = 0
    tolerance_frac_of_range: float = 1e-4  # fp32 ONNX vs torch must be within this
    fp32_vs_torch: ErrorStats | None = None
    int8_vs_fp32: ErrorStats | None = None
    # baselines: one network step (encoder + denoiser) in normalised units, where the limit applies;
    # the fields above are end to end through the sampler, which compounds rounding over its steps
    fp32_step_vs_torch: ErrorStats | None = None
    # rs_imle: the fp32 generator against itself with z + latent_jitter_std * N(0, 1). A generator is steep
    # near the borders between modes, so a tiny latent change moves some actions by percent of the range:
    # the scale against which int8's error tail is read (the mean is what int8 itself adds)
    fp32_latent_jitter: ErrorStats | None = None
    latent_jitter_std: float | None = None


@dataclass
class Manifest:
    name: str
    method: str
    task: str
    obs: ObsSpec
    action: ActionSpec
    horizons: Horizons
    control: ControlSpec
    latent_shape: list[int]
    normalization: Normalization
    files: list[FileEntry]
    training: Training = field(default_factory=Training)
    parity: Parity = field(default_factory=Parity)
    sampler: SamplerSpec | None = None  # baselines only
    cond_dim: int | None = None  # baselines: width of the encoder's output
    evaluation: Evaluation | None = None  # shipped packages: recorded by trainer.evaluate.record
    golden: dict | None = None  # reference inputs and outputs per graph (runtime.golden checks them)
    # the task (runtime.task_spec.TaskSpec.to_dict()): names, angles, period, action joints, success signal;
    # None in packages exported before it existed (see get_task_spec)
    task_spec: dict | None = None
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        # format first: a reader sees what it is before anything else
        return {"format": d.pop("format"), "format_version": d.pop("format_version"), **d}

    @classmethod
    def from_dict(cls, d: Any) -> "Manifest":
        if not isinstance(d, dict):
            raise PackageError("manifest: expected a JSON object")
        if d.get("format") != FORMAT:
            raise PackageError(f"manifest field 'format' is {_short(d.get('format'))}, expected {FORMAT!r}")
        if d.get("format_version") != FORMAT_VERSION:
            raise PackageError(f"manifest field 'format_version' is {_short(d.get('format_version'))}; "
                               f"this runtime reads version {FORMAT_VERSION}")
        m = _parse(cls, d, "")
        m.validate()
        return m

    def validate(self) -> None:
        """Consistency and bounds between fields (types were checked while parsing)."""
        def need(ok: bool, fld: str, msg: str) -> None:
            if not ok:
                raise PackageError(f"manifest field '{fld}' {msg}")

        def within(value: int, lo: int, hi: int, fld: str) -> None:
            need(lo <= value <= hi, fld, f"is {value}; must be in {lo}..{hi}")

        def names(values: list[str], dim: int, fld: str, dim_fld: str) -> None:
            need(len(values) == dim, fld, f"has {len(values)} names for {dim_fld} {dim}")
            for i, v in enumerate(values):
                need(0 < len(v) <= MAX_NAME_CHARS, f"{fld}[{i}]", f"must have 1..{MAX_NAME_CHARS} characters")

        need(self.method in METHODS, "method", f"is {self.method!r}; expected one of {', '.join(METHODS)}")
        within(self.obs.state_dim, 1, MAX_DIM, "obs.state_dim")
        names(self.obs.state_names, self.obs.state_dim, "obs.state_names", "state_dim")
        if self.obs.image_shape is not None:
            shp = self.obs.image_shape
            need(len(shp) == 3 and shp[0] == 3 and all(1 <= s <= MAX_IMAGE_SIDE for s in shp[1:]), "obs.image_shape",
                 f"must be [3, H, W] with H and W in 1..{MAX_IMAGE_SIDE}, got {shp}")
        a = self.action
        within(a.dim, 1, MAX_DIM, "action.dim")
        names(a.names, a.dim, "action.names", "action.dim")
        for name in ("low", "high"):
            need(len(getattr(a, name)) == a.dim, f"action.{name}",
                 f"has {len(getattr(a, name))} entries for action.dim {a.dim}")
        for i, (lo, hi) in enumerate(zip(a.low, a.high)):
            need(math.isfinite(lo), f"action.low[{i}]", f"is {lo}; must be finite")
            need(math.isfinite(hi), f"action.high[{i}]", f"is {hi}; must be finite")
            need(lo < hi, f"action.low[{i}]", f"({lo}) must be below action.high[{i}] ({hi})")
        h = self.horizons
        within(h.obs, 1, MAX_HORIZON, "horizons.obs")
        within(h.pred, 1, MAX_HORIZON, "horizons.pred")
        need(1 <= h.action <= h.pred - h.obs + 1, "horizons.action",
             f"is {h.action}; must be in 1..pred - obs + 1 = {h.pred - h.obs + 1} (pred {h.pred}, obs {h.obs})")
        c = self.control
        lo_p, hi_p = PERIOD_S_RANGE
        need(math.isfinite(c.period_s) and lo_p <= c.period_s <= hi_p, "control.period_s",
             f"is {c.period_s}; must be a finite number in [{lo_p}, {hi_p}] s")
        check_candidates(c.candidates, h.pred, a.dim, "manifest field 'control.candidates'")
        within(c.tc_reset_after, 0, MAX_TC_RESET_AFTER, "control.tc_reset_after")
        need(list(self.latent_shape) == [h.pred, a.dim], "latent_shape",
             f"is {self.latent_shape}, expected [horizons.pred, action.dim] = {[h.pred, a.dim]}")
        for part, dim in (("state", self.obs.state_dim), ("action", a.dim)):
            st = getattr(self.normalization, part)
            need(len(st.min) == dim and len(st.max) == dim, f"normalization.{part}",
                 f"must have {dim} min and max values")
            for i, (lo, hi) in enumerate(zip(st.min, st.max)):
                need(math.isfinite(lo), f"normalization.{part}.min[{i}]", f"is {lo}; must be finite")
                need(math.isfinite(hi), f"normalization.{part}.max[{i}]", f"is {hi}; must be finite")
                need(lo <= hi, f"normalization.{part}.min[{i}]", f"({lo}) is above max[{i}] ({hi})")
        need(len(self.files) > 0, "files", "is empty")
        need(len(self.files) <= MAX_FILES, "files", f"has {len(self.files)} entries; at most {MAX_FILES}")
        roles = {"rs_imle": {"generator"}}.get(self.method, {"encoder", "denoiser"})
        seen: set[str] = set()
        for i, f in enumerate(self.files):
            need(f.precision in PRECISIONS, f"files[{i}].precision", f"is {f.precision!r}; expected fp32 or int8")
            need(f.role in roles | {EXTERNAL_DATA}, f"files[{i}].role",
                 f"is {f.role!r}; a {self.method} package has {', '.join(sorted(roles | {EXTERNAL_DATA}))}")
            need(bool(_SHA256.fullmatch(f.sha256)), f"files[{i}].sha256", "is not a lower-case sha256 hex digest")
            need(bool(_FILE_NAME.fullmatch(f.name)) and ".." not in f.name and f.name != MANIFEST, f"files[{i}].name",
                 f"{f.name[:80]!r} must be a plain file name inside the package (letters, digits, '_', '.', '-'; "
                 "no path separators or '..')")
            need(f.name not in seen, f"files[{i}].name", f"{f.name!r} is listed twice")
            seen.add(f.name)
        for role in roles:
            need(any(f.role == role and f.precision == "fp32" for f in self.files), "files",
                 f"has no fp32 {role} graph")
        if self.method != "rs_imle":
            need(self.sampler is not None, "sampler", f"is required for a {self.method} package")
            s = self.sampler
            need(s.kind in SAMPLERS, "sampler.kind", f"is {s.kind!r}; expected one of {', '.join(SAMPLERS)}")
            within(s.train_steps, 1, MAX_SAMPLER_STEPS, "sampler.train_steps")
            within(s.steps, 1, s.train_steps if s.kind in ("ddpm", "ddim") else MAX_SAMPLER_STEPS, "sampler.steps")
            need(self.cond_dim is not None, "cond_dim", f"is required for a {self.method} package")
            within(self.cond_dim, 1, MAX_COND_DIM, "cond_dim")
        if self.task_spec is not None:
            self._check_task_spec()

    def _check_task_spec(self) -> None:
        """The task section parses and agrees with the fields the graphs were checked against."""
        try:
            t = TaskSpec.from_dict(self.task_spec)
        except TaskSpecError as exc:
            raise PackageError(f"manifest field 'task_spec': {exc}") from None

        def agree(fld: str, value: Any, other: str, expected: Any) -> None:
            if value != expected:
                raise PackageError(f"manifest field 'task_spec.{fld}' is {_short(value)} but {other} is "
                                   f"{_short(expected)}")

        agree("observation.state.use", list(t.state.use), "obs.state_names", list(self.obs.state_names))
        agree("action.names", list(t.action.names), "action.names", list(self.action.names))
        h = self.horizons
        agree("horizons", [t.horizons.obs, t.horizons.pred, t.horizons.action], "horizons [obs, pred, action]",
              [h.obs, h.pred, h.action])
        agree("task.period_s", t.period_s, "control.period_s", self.control.period_s)
        shapes = [[im.shape[2], im.shape[0], im.shape[1]] for im in t.images]
        agree("observation.images", shapes, "obs.image_shape as [C, H, W]",
              [] if self.obs.image_shape is None else [list(self.obs.image_shape)])

    def get_task_spec(self) -> TaskSpec:
        """The package's task. A package exported before manifests carried one gets a task derived from its
        observation and action names, horizons and period: no other columns, no angles, NO success signal
        (never guessed from the task's name)."""
        if self.task_spec is not None:
            return TaskSpec.from_dict(self.task_spec)  # validated when the manifest was read
        h = self.horizons
        return TaskSpec.derived(self.task, self.obs.state_names, self.action.names, h.obs, h.pred, h.action,
                                self.control.period_s, self.obs.image_shape)

    def file(self, role: str, precision: str) -> FileEntry | None:
        """The graph of ``role`` at ``precision``. A baseline's encoder falls back to fp32: a state
        encoder has no convolution to quantise, so an int8 package may ship only an fp32 encoder."""
        exact = next((f for f in self.files if f.role == role and f.precision == precision), None)
        if exact is None and role == "encoder":
            return next((f for f in self.files if f.role == role and f.precision == "fp32"), None)
        return exact

    def precisions(self) -> list[str]:
        """Precisions this package can run at (those of its generator or denoiser graph)."""
        main = "generator" if self.method == "rs_imle" else "denoiser"
        return [p for p in PRECISIONS if any(f.role == main and f.precision == p for f in self.files)]


def _short(value: Any, limit: int = 60) -> str:
    """repr of a manifest value, cut so that an error stays one short line."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def _parse(tp: Any, value: Any, path: str) -> Any:
    """JSON value -> typed value (nested dataclasses, lists, optionals); PackageError names the field."""
    where = path or "manifest"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _parse(args[0], value, path)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PackageError(f"manifest field '{where}' must be an object")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            sub = f"{path}.{f.name}" if path else f.name
            if f.name in value:
                kwargs[f.name] = _parse(hints[f.name], value[f.name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise PackageError(f"manifest field '{sub}' is missing")
        return tp(**kwargs)
    if origin is list:
        if not isinstance(value, list):
            raise PackageError(f"manifest field '{where}' must be a list")
        (item,) = typing.get_args(tp) or (Any,)
        return [_parse(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PackageError(f"manifest field '{where}' must be a number, got {_short(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer literal beyond float range
            raise PackageError(f"manifest field '{where}' is out of float range") from None
        if not math.isfinite(value) and where.split(".")[0].split("[")[0] not in INFORMATIONAL:
            raise PackageError(f"manifest field '{where}' is {value}; must be finite")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PackageError(f"manifest field '{where}' must be an integer, got {_short(value)}")
        return value
    if tp in (str, bool, dict):
        if not isinstance(value, tp):
            raise PackageError(f"manifest field '{where}' must be a {tp.__name__}, got {_short(value)}")
        return value
    return value  # Any


# ---------------------------------------------------------------------------- graph signatures
@dataclass(frozen=True)
class TensorSig:
    name: str
    dtype: str  # onnxruntime's type string, e.g. "tensor(float)"
    shape: tuple  # ints for fixed axes, "N" where the candidate count goes


def expected_signature(m: Manifest, role: str) -> tuple[list[TensorSig], list[TensorSig]]:
    """The inputs and outputs a graph of ``role`` must have, from the manifest."""
    to, tp, a = m.horizons.obs, m.horizons.pred, m.action.dim
    obs = [TensorSig("obs_state", "tensor(float)", (1, to, m.obs.state_dim))]
    if m.obs.image_shape is not None:
        obs.append(TensorSig("obs_image", "tensor(uint8)", (1, to, *m.obs.image_shape)))
    chunk = ("N", tp, a)
    if role == "generator":
        return obs + [TensorSig("z", "tensor(float)", chunk)], [TensorSig("actions", "tensor(float)", chunk)]
    if role == "encoder":
        return obs, [TensorSig("cond", "tensor(float)", (1, m.cond_dim))]
    if role == "denoiser":
        return ([TensorSig("cond", "tensor(float)", (1, m.cond_dim)), TensorSig("sample", "tensor(float)", chunk),
                 TensorSig("timestep", "tensor(float)", (1,))], [TensorSig("output", "tensor(float)", chunk)])
    raise PackageError(f"unknown graph role {role!r}")


def check_signature(file_name: str, actual_in: list, actual_out: list,
                    expected: tuple[list[TensorSig], list[TensorSig]]) -> None:
    """Compare onnxruntime NodeArgs (name, type, shape) with the expected signature."""
    for kind, actual, want in (("input", actual_in, expected[0]), ("output", actual_out, expected[1])):
        names = [x.name for x in actual]
        if sorted(names) != sorted(w.name for w in want):
            raise PackageError(f"{file_name}: graph {kind} names {names} do not match the manifest's "
                               f"{[w.name for w in want]}")
        by_name = {x.name: x for x in actual}
        for w in want:
            got = by_name[w.name]
            if got.type != w.dtype:
                raise PackageError(f"{file_name}: {kind} '{w.name}' has type {got.type}, expected {w.dtype}")
            shape = list(got.shape)
            ok = len(shape) == len(w.shape) and all(
                (isinstance(g, int) and g == e) if isinstance(e, int) else not isinstance(g, int)
                for g, e in zip(shape, w.shape))
            if not ok:
                raise PackageError(f"{file_name}: {kind} '{w.name}' has shape {shape}, the manifest implies "
                                   f"{list(w.shape)} (N = any candidate count)")


# ---------------------------------------------------------------------------- reading files safely
# O_NOFOLLOW: a file swapped for a symlink after the lstat check is refused, not followed;
# O_NONBLOCK: a FIFO swapped in cannot block the open (no effect on regular files)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def _open_regular(path: Path, what: str, limit: int) -> int:
    """A read-only descriptor of ``path``, which must be a regular file (not a symlink) of at most ``limit`` bytes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise PackageError(f"{what}: {path.name} is not in the package") from None
    except OSError as exc:
        raise PackageError(f"{what}: cannot read {path.name} ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise PackageError(f"{what}: {path.name} is a symbolic link; a package holds only regular files")
    if not stat.S_ISREG(st.st_mode):
        raise PackageError(f"{what}: {path.name} is not a regular file")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:  # ELOOP: became a symlink since the lstat
        raise PackageError(f"{what}: cannot open {path.name} ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PackageError(f"{what}: {path.name} is not a regular file")
        raise PackageError(f"{what}: {path.name} has {st.st_size} bytes; at most {limit} are allowed")
    return fd


def _chunks(fd: int, path: Path, what: str, limit: int):
    """The file's bytes in blocks; refuses a file that grows past ``limit`` while being read."""
    total = 0
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            total += len(block)
            if total > limit:
                raise PackageError(f"{what}: {path.name} grew past {limit} bytes while being read")
            yield block


def read_file(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """All bytes of a regular, non-symlink file of at most ``limit`` bytes (PackageError otherwise)."""
    return b"".join(_chunks(_open_regular(path, what, limit), path, what, limit))


def sha256_file(path: Path, what: str = "file", limit: int = MAX_FILE_BYTES) -> str:
    h = hashlib.sha256()
    for block in _chunks(_open_regular(Path(path), what, limit), Path(path), what, limit):
        h.update(block)
    return h.hexdigest()


def json_depth(data: bytes) -> int:
    """Deepest nesting of [ and { outside JSON strings, in linear time and without recursion."""
    import numpy as np  # the runtime's own dependency; imported here to keep the module light

    b = re.sub(rb"\\.", b"", data, flags=re.S)  # escapes first: then every string is "[^"]*"
    b = re.sub(rb'"[^"]*"', b"", b)
    arr = np.frombuffer(b, np.uint8)
    step = np.isin(arr, (ord("["), ord("{"))).astype(np.int32) - np.isin(arr, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def _unique_keys(pairs: list) -> dict:
    d = {}
    for k, v in pairs:
        if k in d:  # json.loads would keep the last silently; two values for one field is ambiguous
            raise PackageError(f"manifest: key {_short(k)} appears twice in one object")
        d[k] = v
    return d


def read_manifest(root: Path, trust: Any = None) -> Manifest:
    """Parse and validate ``root/manifest.json``: size and nesting bounded before json.loads runs.
    ``trust``: runtime.signing.TrustPolicy for the signature of these exact bytes; None = the robot's
    (trusted-keys directory, $IMLE_ALLOW_UNSIGNED); False = not checked (signing, imle-verify's own report)."""
    mpath = root / MANIFEST
    data = read_file(mpath, "manifest", MAX_MANIFEST_BYTES)
    if trust is not False:
        from runtime.signing import check_package_signature

        check_package_signature(root, data, trust)
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise PackageError(f"{mpath}: JSON nesting depth is {depth}; at most {MAX_JSON_DEPTH}")
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except PackageError:
        raise
    except UnicodeDecodeError as exc:
        raise PackageError(f"{mpath}: not valid JSON (not UTF-8 at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise PackageError(f"{mpath}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer literal with more than 4300 digits
        raise PackageError(f"{mpath}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    return Manifest.from_dict(raw)


# ---------------------------------------------------------------------------- ONNX external data
# onnxruntime reads an initializer stored "externally" from a file named in the graph, relative to the
# model, unhashed. Sessions are made from verified bytes, so the runtime must know every external
# file a graph names: a minimal protobuf walk over the ONNX messages that can hold a TensorProto.
_PROTO_FIELDS = {  # message -> {field number: message kind of that length-delimited field}
    "model": {7: "graph", 20: "training", 25: "function"},  # ModelProto
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # GraphProto: node, initializer, sparse_initializer
    "node": {5: "attr"},  # NodeProto.attribute
    "attr": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},  # AttributeProto
    "sparse": {1: "tensor", 2: "tensor"},  # SparseTensorProto: values, indices
    "function": {7: "node"},  # FunctionProto.node
    "training": {1: "graph", 2: "graph"},  # TrainingInfoProto: initialization, algorithm
    "tensor": {13: "entry"},  # TensorProto.external_data (key/value entries)
    "entry": {1: "str", 2: "str"},  # StringStringEntryProto
}
_TENSOR_DATA_LOCATION, _EXTERNAL = 14, 1
MAX_PROTO_DEPTH = 64


class _ProtoError(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _ProtoError("truncated")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _ProtoError("malformed varint")


def _walk(buf: bytes, kind: str, pos: int, end: int, depth: int, found: list[str]) -> dict:
    if depth > MAX_PROTO_DEPTH:
        raise _ProtoError(f"messages nested deeper than {MAX_PROTO_DEPTH}")
    fields = _PROTO_FIELDS[kind]
    strings: dict[int, str] = {}
    external, location = False, None
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            if kind == "tensor" and field == _TENSOR_DATA_LOCATION and value == _EXTERNAL:
                external = True
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _ProtoError("truncated")
            sub = fields.get(field)
            if sub == "str":
                try:
                    strings[field] = bytes(buf[pos:pos + n]).decode("utf-8")
                except UnicodeDecodeError:
                    raise _ProtoError("external_data entry is not UTF-8") from None
            elif sub == "entry":
                entry = _walk(buf, sub, pos, pos + n, depth + 1, found)
                external = True  # any external_data entry: treat the tensor as external
                if entry.get(1) == "location":
                    location = entry.get(2, "")
            elif sub is not None:
                _walk(buf, sub, pos, pos + n, depth + 1, found)
            pos += n
        else:
            raise _ProtoError(f"unsupported wire type {wire}")
    if pos != end:
        raise _ProtoError("truncated")
    if external:
        found.append(location if location is not None else "")
    return strings


def external_data_files(model: bytes, name: str = "graph") -> list[str]:
    """The external-data file names that an ONNX model's tensors refer to, in order, without repeats.
    PackageError (naming ``name``) when the bytes are not a well-formed protobuf."""
    found: list[str] = []
    try:
        _walk(model, "model", 0, len(model), 0, found)
    except _ProtoError as exc:
        raise PackageError(f"{name}: not a valid ONNX model ({exc})") from None
    return list(dict.fromkeys(found))


def _ort_message(exc: BaseException) -> str:
    """onnxruntime's error text as one short line."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    if len(text) > 240:  # the head names the failure, the tail usually holds the shapes or the op
        text = f"{text[:110]} ... {text[-110:]}"
    return f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------- the package
@dataclass
class Package:
    root: Path
    manifest: Manifest

    def path(self, entry: FileEntry) -> Path:
        return self.root / entry.name

    def entry(self, role: str, precision: str) -> FileEntry:
        e = self.manifest.file(role, precision)
        if e is None:
            have = ", ".join(self.manifest.precisions()) or "none"
            raise PackageError(f"package {self.root.name} has no {precision} {role} graph (precisions: {have})")
        return e

    def read(self, entry: FileEntry) -> bytes:
        """The file's bytes, checked against its sha256: what is hashed is what is used."""
        i = self.manifest.files.index(entry)
        data = read_file(self.path(entry), f"manifest field 'files[{i}]'")
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise PackageError(f"manifest field 'files[{i}].sha256': {entry.name} does not match its hash "
                               "(file changed or corrupt)")
        return data

    def _external_data(self, graph: FileEntry, model: bytes) -> tuple[list[str], list[bytes]]:
        """Verified contents of the external-data files ``graph`` names; each must be listed in the manifest."""
        names, blobs = [], []
        listed = {f.name: f for f in self.manifest.files if f.role == EXTERNAL_DATA}
        for loc in external_data_files(model, graph.name):
            if loc not in listed:
                raise PackageError(f"{graph.name}: the graph keeps tensors in external file {_short(loc)}, which the "
                                   f"manifest does not list as a file with role '{EXTERNAL_DATA}' and its sha256")
            names.append(loc)
            blobs.append(self.read(listed[loc]))
        return names, blobs

    def session(self, role: str, precision: str, threads: int = 1, device: str = "cpu"):
        """An onnxruntime session for one graph, made from the verified bytes (never re-read from a path)
        and checked against the manifest's signature."""
        import onnxruntime as ort

        from runtime.onnx_session import providers_for, session_options

        e = self.entry(role, precision)
        model = self.read(e)
        names, blobs = self._external_data(e, model)
        so = session_options(threads)
        so.log_severity_level = 4  # fatal only: a load or run error reaches the user once, as our one line
        providers = providers_for(device)
        if names:
            if not hasattr(so, "add_external_initializers_from_files_in_memory"):
                raise PackageError(f"{e.name}: the graph uses external data, which onnxruntime {ort.__version__} "
                                   "cannot take from memory; re-export without external data")
            so.add_external_initializers_from_files_in_memory(names, blobs, [len(b) for b in blobs])
        ort.set_default_logger_severity(3)
        try:
            sess = ort.InferenceSession(model, sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime's Fail / InvalidGraph / NotImplemented / InvalidProtobuf ...
            raise PackageError(f"{e.name}: onnxruntime cannot load this graph ({_ort_message(exc)})") from None
        check_signature(e.name, sess.get_inputs(), sess.get_outputs(), expected_signature(self.manifest, role))
        return sess

    def verify_graphs(self) -> None:
        """Open every graph once and compare its inputs and outputs with the manifest (slow for big graphs)."""
        for e in self.manifest.files:
            if e.role != EXTERNAL_DATA:
                self.session(e.role, e.precision)


def _check_directory(root: Path, manifest: Manifest) -> None:
    """A package holds manifest.json and its listed files, nothing else: no symlinks, no strays."""
    listed = {f.name for f in manifest.files} | {MANIFEST, SIGNATURE}
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_symlink():
                raise PackageError(f"package {root.name}: {_short(entry.name)} is a symbolic link; "
                                   "a package holds only regular files")
            if entry.name not in listed:
                raise PackageError(f"package {root.name}: {_short(entry.name)} is not listed in the manifest "
                                   "(a package holds only manifest.json and its listed files)")


def load_package(path: str | Path, verify_hashes: bool = True, verify_graphs: bool = False,
                 trust: Any = None) -> Package:
    """Read and check a package directory. Graph signatures are always checked when a session is
    opened (:meth:`Package.session`), which also re-hashes the bytes it loads whatever
    ``verify_hashes`` says; ``verify_graphs`` checks every file up front."""
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"package not found: {root} (expected a directory with {MANIFEST})")
    if not os.path.lexists(root / MANIFEST):
        raise PackageError(f"{root} has no {MANIFEST}: not a model package")
    manifest = read_manifest(root, trust)
    _check_directory(root, manifest)
    pkg = Package(root=root, manifest=manifest)
    for i, e in enumerate(manifest.files):
        what = f"manifest field 'files[{i}]'"
        if verify_hashes:
            if sha256_file(pkg.path(e), what) != e.sha256:
                raise PackageError(f"manifest field 'files[{i}].sha256': {e.name} does not match its hash "
                                   "(file changed or corrupt)")
        else:
            os.close(_open_regular(pkg.path(e), what, MAX_FILE_BYTES))
    if verify_graphs:
        pkg.verify_graphs()
    return pkg
