"""Helper of benchmarks/arm_check.sh: the same inputs through a package's graphs on x86 and on aarch64.

    python benchmarks/arm_check.py inputs  --package P --out inputs.npz [--random 256 --latents 8]
    python benchmarks/arm_check.py run     --package P --inputs inputs.npz --out outputs.npz  # on each machine
    python benchmarks/arm_check.py compare --package P --reference x86.npz --other LABEL=arm.npz ... --json OUT
    python benchmarks/arm_check.py record  --package P --arch aarch64/cortex-a72 ...   # release step, then imle-sign

``run`` needs only numpy, onnxruntime and the runtime (it runs inside the arm64 chroot with the offline
bundle's venv). Inputs are the manifest's golden cases plus ``--random`` observations drawn uniformly in
the state statistics' range, each with ``--latents`` standard-normal latents (or noisy samples).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path and (ROOT / "runtime").is_dir():
    sys.path.insert(0, str(ROOT))  # host side: the source checkout; in the chroot the venv has the runtime

AT_HWCAP = 16
HWCAP_ASIMDDP = 1 << 20  # aarch64: SDOT/UDOT, which onnxruntime's int8 kernels use when present


def _graphs(m) -> list:
    from runtime.package import EXTERNAL_DATA

    return [e for e in m.files if e.role != EXTERNAL_DATA]


def cmd_inputs(args: argparse.Namespace) -> int:
    """Golden inputs and random observations, per graph file, in one npz (keys: '<file>|<set>|<input>')."""
    from runtime.golden import parse_cases
    from runtime.package import load_package

    pkg = load_package(args.package, trust=False)
    m = pkg.manifest
    if m.obs.image_shape is not None or any(e.role != "generator" for e in _graphs(m)):
        # denoisers and encoders need a cond chain and images; the golden cases still cover them
        print("arm_check: random inputs only for state-observation generator packages; using golden cases only",
              file=sys.stderr)
        args.random = 0
    rng = np.random.default_rng(args.seed)
    arrays: dict[str, np.ndarray] = {}
    per_file: dict[str, list] = {}
    for name, ins, _ in parse_cases(m):
        per_file.setdefault(name, []).append(ins)
    for name, cases in per_file.items():
        for k in {k for c in cases for k in c}:
            arrays[f"{name}|golden|{k}"] = np.stack([c[k] for c in cases])
    if args.random:
        lo = np.asarray(m.normalization.state.min, np.float64)
        hi = np.asarray(m.normalization.state.max, np.float64)
        obs = (lo + (hi - lo) * rng.random((args.random, 1, m.horizons.obs, len(lo)))).astype(np.float32)
        z = rng.standard_normal((args.random, args.latents, m.horizons.pred, m.action.dim), dtype=np.float32)
        for e in _graphs(m):  # same observations and latents for every precision
            arrays[f"{e.name}|random|obs_state"] = obs
            arrays[f"{e.name}|random|z"] = z
    np.savez_compressed(args.out, **arrays)
    n = sum(a.shape[0] for k, a in arrays.items() if k.endswith("|obs_state"))
    print(f"arm_check: {n} input cases for {len(per_file)} graphs -> {args.out}")
    return 0


def _hwcap() -> int | None:
    try:
        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        return int(libc.getauxval(ctypes.c_ulong(AT_HWCAP)))
    except (OSError, AttributeError):
        return None


def cmd_run(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from runtime.package import load_package

    pkg = load_package(args.package, trust=False)
    m = pkg.manifest
    inputs = np.load(args.inputs)
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key in inputs.files:
        name, part, inp = key.split("|")
        groups.setdefault((name, part), {})[inp] = inputs[key]
    entries = {e.name: e for e in _graphs(m)}
    out: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for (name, part), feeds in sorted(groups.items()):
        e = entries[name]
        sess = pkg.session(e.role, e.precision, args.threads)
        names = [o.name for o in sess.get_outputs()]
        n = next(iter(feeds.values())).shape[0]
        res = [sess.run(names, {k: v[i] for k, v in feeds.items()}) for i in range(n)]
        for j, oname in enumerate(names):
            out[f"{name}|{part}|{oname}"] = np.stack([np.asarray(r[j], np.float32) for r in res])
    hw = _hwcap()
    meta = {"machine": platform.machine(), "onnxruntime": ort.__version__, "python": platform.python_version(),
            "hwcap": hw, "asimddp": None if hw is None or platform.machine() != "aarch64" else bool(hw & HWCAP_ASIMDDP),
            "seconds": round(time.perf_counter() - t0, 1)}
    np.savez_compressed(args.out, __meta__=np.array(json.dumps(meta)), **out)
    print(f"arm_check: ran {len(groups)} input sets on {meta['machine']} in {meta['seconds']} s -> {args.out}")
    return 0


def compare(package: str, reference: str, others: dict[str, str]) -> dict:
    """Per other platform and precision: max |difference| in output units and as a fraction of the range
    imle-verify measures against (runtime.golden.output_range), over golden and random inputs."""
    from runtime.golden import TOLERANCE, output_range
    from runtime.package import load_package

    m = load_package(package, trust=False).manifest
    prec = {e.name: e.precision for e in _graphs(m)}
    ref = np.load(reference)
    rows = []
    platforms = {"reference": json.loads(str(ref["__meta__"]))}
    for label, path in others.items():
        oth = np.load(path)
        platforms[label] = json.loads(str(oth["__meta__"]))
        by_prec: dict[str, dict] = {}
        for key in ref.files:
            if key == "__meta__":
                continue
            name, part, oname = key.split("|")
            a, b = ref[key].astype(np.float64), oth[key].astype(np.float64)
            if a.shape != b.shape:
                raise SystemExit(f"arm_check: {key}: shape {list(b.shape)} on {label}, {list(a.shape)} on reference")
            diff = np.abs(a - b)
            frac = diff / output_range(m, oname, ref[key])
            r = by_prec.setdefault(prec[name], {"platform": label, "precision": prec[name], "values": 0,
                                                "max_abs": 0.0, "max_frac": 0.0, "golden_max_frac": 0.0,
                                                "mean_abs": 0.0, "values_over_0.1_unit": 0})
            r["mean_abs"] = (r["mean_abs"] * r["values"] + float(diff.sum())) / (r["values"] + diff.size)
            r["values"] += int(diff.size)
            r["max_abs"] = max(r["max_abs"], float(diff.max()))
            r["max_frac"] = max(r["max_frac"], float(frac.max()))
            r["values_over_0.1_unit"] += int((diff > 0.1).sum())
            if part == "golden":
                r["golden_max_frac"] = max(r["golden_max_frac"], float(frac.max()))
        for r in by_prec.values():
            r["tolerance"] = TOLERANCE[r["precision"]]
            r["margin"] = r["tolerance"] / r["max_frac"] if r["max_frac"] > 0 else float("inf")
            rows.append(r)
    return {"package": m.name, "platforms": platforms, "rows": rows}


def table(result: dict) -> str:
    head = f"{'platform':<22} {'prec':<5} {'values':>7} {'max |d|':>10} {'mean |d|':>10} {'max/range':>10} " \
           f"{'golden':>10} {'tolerance':>9} {'margin':>7}"
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(f"{r['platform']:<22} {r['precision']:<5} {r['values']:>7} {r['max_abs']:>10.2e} "
                     f"{r['mean_abs']:>10.2e} {r['max_frac']:>10.2e} {r['golden_max_frac']:>10.2e} "
                     f"{r['tolerance']:>9.0e} {r['margin']:>6.1f}x")
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    others = dict(o.split("=", 1) for o in args.other)
    result = compare(args.package, args.reference, others)
    print(table(result))
    if args.json:
        extra = json.loads(args.extra) if args.extra else {}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**result, **extra}, indent=2) + "\n")
    low = [r for r in result["rows"] if r["margin"] < args.min_margin]
    for r in low:
        print(f"arm_check: {r['platform']} {r['precision']}: measured {r['max_frac']:.2e} of range, tolerance "
              f"{r['tolerance']:.0e}: margin {r['margin']:.1f}x < {args.min_margin}x", file=sys.stderr)
    return 1 if low else 0


def cmd_record(args: argparse.Namespace) -> int:
    """Add architectures to the manifest's golden.checked_architectures (the manifest's bytes change:
    re-sign with imle-sign and refresh exported_models/index.json afterwards)."""
    import os

    from runtime.package import MANIFEST

    path = Path(args.package) / MANIFEST
    d = json.loads(path.read_text())
    checked = d["golden"].setdefault("checked_architectures", [])
    added = [a for a in args.arch if a not in checked]
    checked.extend(added)
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(d, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"{path}: checked_architectures {checked} (added {added or 'nothing'}); re-sign: imle-sign {args.package}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="arm_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("inputs")
    s.add_argument("--package", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--random", type=int, default=256)
    s.add_argument("--latents", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("run")
    s.add_argument("--package", required=True)
    s.add_argument("--inputs", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1)
    s = sub.add_parser("compare")
    s.add_argument("--package", required=True)
    s.add_argument("--reference", required=True)
    s.add_argument("--other", action="append", default=[], metavar="LABEL=NPZ")
    s.add_argument("--json", default=None)
    s.add_argument("--extra", default=None, help="JSON object merged into --json (setup times, sizes)")
    s.add_argument("--min-margin", type=float, default=2.0, help="fail when tolerance / measured is below this")
    s = sub.add_parser("record")
    s.add_argument("--package", required=True)
    s.add_argument("--arch", action="append", required=True)
    args = p.parse_args(argv)
    return {"inputs": cmd_inputs, "run": cmd_run, "compare": cmd_compare, "record": cmd_record}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
