"""Model packages: the manifest dataclasses, loading, and verification against the ONNX graphs.

A package is a directory with ``manifest.json`` and one or more ONNX files. The runtime refuses a
package whose format version, hashes, shapes or names do not match, with a :class:`PackageError`
whose message names the field. This module runs on the robot: numpy and onnxruntime only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "imle-policy-package"
FORMAT_VERSION = 1
METHODS = ("rs_imle", "diffusion", "flow_matching")
PRECISIONS = ("fp32", "int8")
SAMPLERS = ("ddpm", "ddim", "euler")
MANIFEST = "manifest.json"


class PackageError(ValueError):
    """A package that the runtime refuses; the message names the offending field."""


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
            raise PackageError(f"manifest field 'format' is {d.get('format')!r}, expected {FORMAT!r}")
        if d.get("format_version") != FORMAT_VERSION:
            raise PackageError(f"manifest field 'format_version' is {d.get('format_version')!r}; "
                               f"this runtime reads version {FORMAT_VERSION}")
        m = _parse(cls, d, "")
        m.validate()
        return m

    def validate(self) -> None:
        """Consistency between fields (types were checked while parsing)."""
        def need(ok: bool, fld: str, msg: str) -> None:
            if not ok:
                raise PackageError(f"manifest field '{fld}' {msg}")
        need(self.method in METHODS, "method", f"is {self.method!r}; expected one of {', '.join(METHODS)}")
        need(self.obs.state_dim > 0, "obs.state_dim", "must be positive")
        need(len(self.obs.state_names) == self.obs.state_dim, "obs.state_names",
             f"has {len(self.obs.state_names)} names for state_dim {self.obs.state_dim}")
        if self.obs.image_shape is not None:
            need(len(self.obs.image_shape) == 3 and self.obs.image_shape[0] == 3, "obs.image_shape",
                 f"must be [3, H, W], got {self.obs.image_shape}")
        a = self.action
        need(a.dim > 0, "action.dim", "must be positive")
        for name in ("names", "low", "high"):
            need(len(getattr(a, name)) == a.dim, f"action.{name}", f"has {len(getattr(a, name))} entries for action.dim {a.dim}")
        h = self.horizons
        need(h.obs >= 1, "horizons.obs", "must be >= 1")
        need(h.pred >= h.obs - 1 + h.action, "horizons", f"pred ({h.pred}) must be >= obs - 1 + action ({h.obs - 1 + h.action})")
        need(h.action >= 1, "horizons.action", "must be >= 1")
        need(self.control.period_s > 0, "control.period_s", "must be positive")
        need(self.control.candidates >= 1, "control.candidates", "must be >= 1")
        need(list(self.latent_shape) == [h.pred, a.dim], "latent_shape",
             f"is {self.latent_shape}, expected [horizons.pred, action.dim] = {[h.pred, a.dim]}")
        for part, dim in (("state", self.obs.state_dim), ("action", a.dim)):
            st = getattr(self.normalization, part)
            need(len(st.min) == dim and len(st.max) == dim, f"normalization.{part}", f"must have {dim} min and max values")
        need(len(self.files) > 0, "files", "is empty")
        roles = {"rs_imle": {"generator"}}.get(self.method, {"encoder", "denoiser"})
        for i, f in enumerate(self.files):
            need(f.precision in PRECISIONS, f"files[{i}].precision", f"is {f.precision!r}; expected fp32 or int8")
            need(f.role in roles, f"files[{i}].role", f"is {f.role!r}; a {self.method} package has {', '.join(sorted(roles))}")
            need(len(f.sha256) == 64, f"files[{i}].sha256", "is not a sha256 hex digest")
            need("/" not in f.name and "\\" not in f.name and f.name not in ("", ".", ".."), f"files[{i}].name",
                 f"{f.name!r} must be a plain file name inside the package")
        for role in roles:
            need(any(f.role == role and f.precision == "fp32" for f in self.files), "files",
                 f"has no fp32 {role} graph")
        if self.method != "rs_imle":
            need(self.sampler is not None, "sampler", f"is required for a {self.method} package")
            need(self.sampler.kind in SAMPLERS, "sampler.kind", f"is {self.sampler.kind!r}; expected one of {', '.join(SAMPLERS)}")
            need(self.sampler.steps >= 1, "sampler.steps", "must be >= 1")
            need(self.cond_dim is not None and self.cond_dim > 0, "cond_dim", f"is required for a {self.method} package")

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
            raise PackageError(f"manifest field '{where}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PackageError(f"manifest field '{where}' must be an integer, got {value!r}")
        return value
    if tp in (str, bool, dict):
        if not isinstance(value, tp):
            raise PackageError(f"manifest field '{where}' must be a {tp.__name__}, got {value!r}")
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


def check_signature(file_name: str, actual_in: list, actual_out: list, expected: tuple[list[TensorSig], list[TensorSig]]) -> None:
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


# ---------------------------------------------------------------------------- the package
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

    def session(self, role: str, precision: str, threads: int = 1, device: str = "cpu"):
        """An onnxruntime session for one graph, checked against the manifest's signature."""
        from runtime.onnx_session import make_session

        e = self.entry(role, precision)
        sess = make_session(self.path(e), threads, device=device)
        check_signature(e.name, sess.get_inputs(), sess.get_outputs(), expected_signature(self.manifest, role))
        return sess

    def verify_graphs(self) -> None:
        """Open every graph once and compare its inputs and outputs with the manifest (slow for big graphs)."""
        for e in self.manifest.files:
            self.session(e.role, e.precision)


def load_package(path: str | Path, verify_hashes: bool = True, verify_graphs: bool = False) -> Package:
    """Read and check a package directory. Graph signatures are always checked when a session is
    opened (:meth:`Package.session`); ``verify_graphs`` checks every file up front."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise PackageError(f"package not found: {root} (expected a directory with {MANIFEST})")
    if not mpath.is_file():
        raise PackageError(f"{root} has no {MANIFEST}: not a model package")
    try:
        raw = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{mpath}: not valid JSON ({exc})") from None
    manifest = Manifest.from_dict(raw)
    pkg = Package(root=root, manifest=manifest)
    for i, e in enumerate(manifest.files):
        p = pkg.path(e)
        if not p.is_file():
            raise PackageError(f"manifest field 'files[{i}].name': {e.name} is not in the package")
        if verify_hashes and sha256_file(p) != e.sha256:
            raise PackageError(f"manifest field 'files[{i}].sha256': {e.name} does not match its hash "
                               "(file changed or corrupt)")
    if verify_graphs:
        pkg.verify_graphs()
    return pkg
