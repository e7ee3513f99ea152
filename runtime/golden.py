"""Golden vectors: reference inputs and outputs per graph, stored in the manifest and re-run on the robot.

The exporter runs each graph of a package on a few observations (and latents / noisy samples) and
stores inputs and outputs in the manifest's ``golden`` section (covered by the signature). On the
robot, ``imle-verify`` runs the same inputs through the same graphs with onnxruntime and compares.
The tolerances belong to the runtime, not the package, and are set per precision from measurements:

- fp32: 1e-4 of the output's range. Measured x86 (AVX-512) vs aarch64 (QEMU cortex-a72/a76) on the
  shipped Push-T package: max 1.5e-4 raw units, i.e. ~3e-7 of the action range.
- int8: 7e-2 of the range. Measured x86 with VNNI vs aarch64: max 0.72 px = 1.2e-3 of the action range.
  But x86 with AVX2 and no VNNI (the shipped package's reference, an AMD EPYC) multiplies u8s8 with
  saturating 16-bit sums (onnxruntime's VPMADDUBSW path): vs aarch64 (exact integer sums; cortex-a72
  and cortex-a76 bit-identical) max 15.9 px = 3.2e-2 of the range on random observations, 1.5e-2 on
  the golden inputs (benchmarks/arm_check.sh, benchmarks/results/arm_check.json); ~2x margin on that.

The output's range is the manifest's action range for ``actions`` (raw units), and for outputs in
normalised units (a denoiser's ``output``, an encoder's ``cond``) 2.0 or the reference's own spread,
whichever is larger. Works for any task and method: cases are per graph file, by input name.
"""
from __future__ import annotations

import base64
import binascii
import platform
from dataclasses import dataclass

import numpy as np

from runtime.package import EXTERNAL_DATA, Manifest, Package, PackageError, expected_signature

GOLDEN_VERSION = 1
TOLERANCE = {"fp32": 1e-4, "int8": 7e-2}  # max |error| / output range, per precision (see above)
DTYPES = {"float32": np.float32, "uint8": np.uint8}
MAX_CASES = 64
MAX_CASE_ELEMENTS = 1 << 20  # per array


class GoldenError(PackageError):
    """Golden vectors that are malformed, missing, or not reproduced within tolerance."""


# ---------------------------------------------------------------------------- arrays in JSON
def encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    name = {np.dtype(np.float32): "float32", np.dtype(np.uint8): "uint8"}[a.dtype]
    data = base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()
    return {"dtype": name, "shape": list(a.shape), "data": data}


def decode_array(d, where: str) -> np.ndarray:
    if not isinstance(d, dict) or set(d) != {"dtype", "shape", "data"}:
        raise GoldenError(f"manifest field '{where}' must be an object with dtype, shape and data")
    dt = DTYPES.get(d["dtype"]) if isinstance(d["dtype"], str) else None
    if dt is None:
        raise GoldenError(f"manifest field '{where}.dtype' is {str(d['dtype'])[:20]!r}; expected float32 or uint8")
    shape = d["shape"]
    if not isinstance(shape, list) or not 0 < len(shape) <= 8 or \
            not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_CASE_ELEMENTS for s in shape):
        raise GoldenError(f"manifest field '{where}.shape' must be 1..8 positive integers")
    n = int(np.prod(shape, dtype=np.int64))
    if n > MAX_CASE_ELEMENTS:
        raise GoldenError(f"manifest field '{where}.shape' has {n} elements; at most {MAX_CASE_ELEMENTS}")
    if not isinstance(d["data"], str):
        raise GoldenError(f"manifest field '{where}.data' must be a base64 string")
    try:
        raw = base64.b64decode(d["data"], validate=True)
    except (binascii.Error, ValueError):
        raise GoldenError(f"manifest field '{where}.data' is not valid base64") from None
    size = n * np.dtype(dt).itemsize
    if len(raw) != size:
        raise GoldenError(f"manifest field '{where}.data' has {len(raw)} bytes; "
                          f"shape {shape} {d['dtype']} needs {size}")
    a = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<")).astype(dt).reshape(shape)
    if dt is np.float32 and not np.isfinite(a).all():
        raise GoldenError(f"manifest field '{where}.data' holds NaN or inf")
    return a


# ---------------------------------------------------------------------------- making them (export time)
def _inputs_for(m: Manifest, role: str, state: np.ndarray, image: np.ndarray | None, rng: np.random.Generator,
                n_latent: int, cond: np.ndarray | None) -> dict[str, np.ndarray]:
    tp, a = m.horizons.pred, m.action.dim
    obs = {"obs_state": state[None].astype(np.float32)}
    if m.obs.image_shape is not None:
        obs["obs_image"] = image[None].astype(np.uint8)
    if role == "generator":
        return {**obs, "z": rng.standard_normal((n_latent, tp, a), dtype=np.float32)}
    if role == "encoder":
        return obs
    if role == "denoiser":
        s = m.sampler
        t = float(s.train_steps // 2) if s.kind in ("ddpm", "ddim") else 0.5  # a mid-trajectory step
        return {"cond": cond, "sample": rng.standard_normal((n_latent, tp, a), dtype=np.float32),
                "timestep": np.array([t], np.float32)}
    raise PackageError(f"unknown graph role {role!r}")


def reference_platform() -> dict:
    import onnxruntime as ort

    return {"machine": platform.machine(), "system": platform.system(), "onnxruntime": ort.__version__,
            "int8_dot_product": int8_kernel_flags()}


def int8_kernel_flags() -> list[str]:
    """CPU features that change onnxruntime's int8 kernels (x86 VNNI, ARM dot product)."""
    try:
        with open("/proc/cpuinfo") as fh:
            words = set(fh.read(1 << 20).split())
    except OSError:
        return []
    return sorted(words & {"avx512_vnni", "avx_vnni", "asimddp", "i8mm"})


def make_golden(pkg: Package, obs_state: np.ndarray | None = None, obs_image: np.ndarray | None = None,
                n_obs: int = 2, n_latent: int = 4, seed: int = 0) -> dict:
    """The manifest's ``golden`` section for ``pkg``: ``n_obs`` observations (given, else uniform in the
    state statistics' range) x ``n_latent`` latents per graph, outputs computed here with onnxruntime."""
    m = pkg.manifest
    rng = np.random.default_rng(seed)
    to = m.horizons.obs
    if obs_state is None:
        lo = np.asarray(m.normalization.state.min, np.float64)
        hi = np.asarray(m.normalization.state.max, np.float64)
        obs_state = (lo + (hi - lo) * rng.random((n_obs, to, len(lo)))).astype(np.float32)
    obs_state = np.asarray(obs_state, np.float32)[:n_obs]
    if m.obs.image_shape is not None and obs_image is None:
        obs_image = rng.integers(0, 256, size=(len(obs_state), to, *m.obs.image_shape), dtype=np.uint8)
    graphs = [e for e in m.files if e.role != EXTERNAL_DATA]
    # baselines: a denoiser is fed the fp32 encoder's cond, as the policy does
    enc = m.file("encoder", "fp32")
    cases = []
    for k in range(len(obs_state)):
        img = None if obs_image is None else obs_image[k]
        cond = None
        if enc is not None:
            cond = pkg.session("encoder", "fp32").run(["cond"], _inputs_for(m, "encoder", obs_state[k], img, rng,
                                                                              n_latent, None))[0]
        case_rng_state = rng.bit_generator.state  # every graph of a role sees the same latents
        for e in graphs:
            rng.bit_generator.state = case_rng_state
            feeds = _inputs_for(m, e.role, obs_state[k], img, rng, n_latent, cond)
            sess = pkg.session(e.role, e.precision)
            names = [o.name for o in sess.get_outputs()]
            outs = sess.run(names, feeds)
            cases.append({"file": e.name, "inputs": {n: encode_array(v) for n, v in feeds.items()},
                          "outputs": {n: encode_array(np.asarray(v, np.float32)) for n, v in zip(names, outs)}})
    return {"version": GOLDEN_VERSION, "reference_platform": reference_platform(),
            "checked_architectures": [platform.machine()], "cases": cases}


# ---------------------------------------------------------------------------- checking them (robot)
@dataclass
class GoldenResult:
    file: str
    precision: str
    cases: int
    worst_frac: float  # worst max |error| / range over the file's cases
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.worst_frac <= self.tolerance


def output_range(m: Manifest, name: str, ref: np.ndarray) -> np.ndarray:
    """The scale an output's error is measured against (broadcast over the last axis for actions)."""
    if name == "actions":
        return np.asarray(m.action.high, np.float64) - np.asarray(m.action.low, np.float64)
    return np.asarray(max(2.0, float(np.ptp(ref)) if ref.size else 2.0))


def parse_cases(m: Manifest) -> list[tuple[str, dict, dict]]:
    """(file, inputs, outputs) per case, decoded and checked against the manifest's graph signatures."""
    g = m.golden
    if g is None:
        raise GoldenError("manifest has no golden vectors ('golden' section); re-export the package "
                          "(imle-export writes them) or add them with python -m runtime.golden PACKAGE")
    if not isinstance(g, dict) or g.get("version") != GOLDEN_VERSION:
        got = str(g.get("version") if isinstance(g, dict) else g)[:20]
        raise GoldenError(f"manifest field 'golden.version' is {got}; this runtime reads version {GOLDEN_VERSION}")
    cases = g.get("cases")
    if not isinstance(cases, list) or not 0 < len(cases) <= MAX_CASES:
        raise GoldenError(f"manifest field 'golden.cases' must be a list of 1..{MAX_CASES} cases")
    by_name = {e.name: e for e in m.files if e.role != EXTERNAL_DATA}
    out = []
    for i, c in enumerate(cases):
        where = f"golden.cases[{i}]"
        if not isinstance(c, dict) or set(c) != {"file", "inputs", "outputs"}:
            raise GoldenError(f"manifest field '{where}' must have exactly file, inputs and outputs")
        e = by_name.get(c["file"]) if isinstance(c["file"], str) else None
        if e is None:
            raise GoldenError(f"manifest field '{where}.file' is {str(c['file'])[:60]!r}, not a graph of this package")
        want_in, want_out = expected_signature(m, e.role)
        for part, want in (("inputs", want_in), ("outputs", want_out)):
            if not isinstance(c[part], dict) or sorted(c[part]) != sorted(w.name for w in want):
                got = sorted(c[part]) if isinstance(c[part], dict) else c[part]
                raise GoldenError(f"manifest field '{where}.{part}' names {str(got)[:80]}; the graph's are "
                                  f"{sorted(w.name for w in want)}")
        arrays = {}
        for part, want in (("inputs", want_in), ("outputs", want_out)):
            arrays[part] = {}
            for w in want:
                a = decode_array(c[part][w.name], f"{where}.{part}.{w.name}")
                dt = "tensor(uint8)" if a.dtype == np.uint8 else "tensor(float)"
                fits = dt == w.dtype and len(a.shape) == len(w.shape) and all(
                    isinstance(e_, str) or e_ == s for s, e_ in zip(a.shape, w.shape))
                if not fits:
                    raise GoldenError(f"manifest field '{where}.{part}.{w.name}' is {a.dtype} {list(a.shape)}; the "
                                      f"manifest implies {w.dtype} {list(w.shape)}")
                arrays[part][w.name] = a
        n_in = {arrays["inputs"][w.name].shape[0] for w in want_in if "N" in w.shape}
        n_out = {arrays["outputs"][w.name].shape[0] for w in want_out if "N" in w.shape}
        if len(n_in | n_out) > 1:
            raise GoldenError(f"manifest field '{where}': candidate counts disagree between inputs and outputs")
        out.append((e.name, arrays["inputs"], arrays["outputs"]))
    missing = sorted(set(by_name) - {f for f, _, _ in out})
    if missing:
        raise GoldenError(f"manifest field 'golden.cases' has no case for {', '.join(missing)}")
    return out


def check_golden(pkg: Package, threads: int = 1) -> list[GoldenResult]:
    """Re-run every golden case; one result per graph file. Raises GoldenError for malformed vectors;
    a result with ``ok`` False is a graph that does not reproduce its reference within tolerance."""
    m = pkg.manifest
    cases = parse_cases(m)
    entries = {e.name: e for e in m.files}
    results: dict[str, GoldenResult] = {}
    sessions = {}
    for name, inputs, outputs in cases:
        e = entries[name]
        if name not in sessions:
            sessions[name] = pkg.session(e.role, e.precision, threads)
        got = sessions[name].run(list(outputs), inputs)
        worst = 0.0
        for (oname, ref), val in zip(outputs.items(), got):
            val = np.asarray(val, np.float64)
            if val.shape != ref.shape or not np.isfinite(val).all():
                worst = float("inf")
                continue
            err = np.abs(val - ref.astype(np.float64)) / output_range(m, oname, ref)
            worst = max(worst, float(err.max()))
        r = results.setdefault(name, GoldenResult(name, e.precision, 0, 0.0, TOLERANCE[e.precision]))
        r.cases += 1
        r.worst_frac = max(r.worst_frac, worst)
    return list(results.values())


def add_golden(path, seed: int = 0) -> dict:
    """Compute and store golden vectors in an existing package's manifest (rewritten atomically; the
    file hashes are unchanged, so any signature must be renewed: imle-sign)."""
    import json
    import os
    from pathlib import Path

    from runtime.package import MANIFEST, load_package

    root = Path(path)
    pkg = load_package(root, trust=False)
    pkg.manifest.golden = make_golden(pkg, seed=seed)
    tmp = root.parent / f".{root.name}.manifest.tmp"
    tmp.write_text(json.dumps(pkg.manifest.to_dict(), indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)
    return pkg.manifest.golden


def main(argv: list[str] | None = None) -> int:
    """``python -m runtime.golden PACKAGE``: add golden vectors computed on this machine (release tool)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m runtime.golden", description=main.__doc__)
    p.add_argument("package")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        g = add_golden(args.package, args.seed)
    except PackageError as exc:
        print(f"runtime.golden: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.package}: {len(g['cases'])} golden cases on {g['reference_platform']['machine']}; "
          "re-sign the package (imle-sign)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
