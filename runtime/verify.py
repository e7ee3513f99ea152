"""``imle-verify PACKAGE``: everything the robot can check about a package before running it.

Order matters: nothing is executed until the static checks pass. (1) manifest, directory and file
hashes (runtime.package), (2) the signature under the robot's trust policy (runtime.signing),
(3) per graph, read without onnxruntime: well-formed, no external data / subgraphs / local functions,
every operator in the runtime's supported set, the precision label true (an int8 graph holds quantised
operators and integer weights; an fp32 graph none), inputs and outputs as the manifest implies,
(4) then each graph opened by onnxruntime, and (5) the golden vectors re-run within tolerance.
Needs only the ``robot`` extra. Exit 0: verified; 1: refused (one line says why); 2: usage.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runtime.onnx_inspect import OnnxFormatError, inspect_model
from runtime.package import (EXTERNAL_DATA, MAX_FILE_BYTES, Package, PackageError, check_signature,
                             expected_signature, load_package)

# The operators the runtime's exporters produce (fp32 and int8, every method, state and image
# encoders), plus a few plain tensor operators of the same kind. Anything else (control flow,
# random generators, custom domains, contrib kernels) is refused before onnxruntime loads the file.
SUPPORTED_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Reciprocal", "Neg", "Abs", "Sqrt", "Pow", "Exp", "Log", "Sin", "Cos", "Erf", "Tanh",
    "Sigmoid", "Relu", "Softplus", "Mish", "Clip", "Min", "Max", "Where", "Equal", "Less", "Greater", "Not",
    "MatMul", "Gemm", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
    "ReduceSum", "BatchNormalization", "InstanceNormalization", "GroupNormalization", "LayerNormalization",
    "Softmax", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
    "Expand", "Tile", "Pad", "Shape", "Cast", "Constant", "ConstantOfShape", "Identity", "Range", "Resize",
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
    "DynamicQuantizeLinear",
})
QUANTISED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                           "ConvInteger", "DynamicQuantizeLinear"})
INTEGER_TYPES = (2, 3)  # TensorProto UINT8, INT8


class VerifyError(PackageError):
    """A check that failed; the message is the one line the operator sees."""


@dataclass
class Report:
    package: str
    lines: list[str] = field(default_factory=list)
    ok: bool = False
    refusal: str = ""
    signature: str = ""
    architecture: str = field(default_factory=platform.machine)

    def add(self, what: str) -> None:
        self.lines.append(what)


@dataclass(frozen=True)
class _Arg:  # onnxruntime NodeArg's shape of data, for check_signature
    name: str
    type: str
    shape: tuple


def _read_graph(pkg: Package, name: str, sha256: str) -> bytes:
    """The graph's bytes, read once (no symlinks, bounded) and checked against the manifest's hash."""
    import hashlib

    path = pkg.root / name
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if st.st_size > MAX_FILE_BYTES:
            raise VerifyError(f"{name}: {st.st_size} bytes; at most {MAX_FILE_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise VerifyError(f"{name}: does not match its sha256 in the manifest (changed while verifying?)")
    return data


def check_graph_static(pkg: Package, entry) -> str:
    """Static checks of one graph file; returns a one-line summary, raises VerifyError."""
    name = entry.name
    try:
        s = inspect_model(_read_graph(pkg, name, entry.sha256))
    except OnnxFormatError as exc:
        raise VerifyError(f"{name}: not a well-formed ONNX model ({exc})") from None
    if s.external_data:
        raise VerifyError(f"{name}: tensor {s.external_data[0][:60]!r} is stored in external data; "
                          "the runtime loads self-contained graphs only")
    if s.functions or s.training_info:
        raise VerifyError(f"{name}: holds model-local functions or training info; not supported by the runtime")
    if s.subgraphs:
        raise VerifyError(f"{name}: holds {s.subgraphs} subgraph(s) (control flow); not supported by the runtime")
    bad = sorted(f"{d}:{op}" if d else op for d, op in s.ops if d != "" or op not in SUPPORTED_OPS)
    if bad:
        raise VerifyError(f"{name}: operators not supported by the runtime: {', '.join(bad)[:200]}")
    quant = sum(n for (_, op), n in s.ops.items() if op in QUANTISED_OPS)
    int_weights = sum(s.initializer_types[t] for t in INTEGER_TYPES)
    if entry.precision == "int8" and (quant == 0 or int_weights == 0):
        raise VerifyError(f"{name}: labelled int8 but holds {quant} quantised operators and {int_weights} integer "
                          "tensors: not a quantised graph (an fp32 graph labelled int8?)")
    if entry.precision == "fp32" and quant:
        raise VerifyError(f"{name}: labelled fp32 but holds {quant} quantised operators")
    want = expected_signature(pkg.manifest, entry.role)
    try:
        check_signature(name, [_Arg(v.name, v.dtype, v.shape) for v in s.inputs],
                        [_Arg(v.name, v.dtype, v.shape) for v in s.outputs], want)
    except PackageError as exc:
        raise VerifyError(str(exc)) from None
    label = f"{quant} quantised operators" if entry.precision == "int8" else "no quantised operators"
    return (f"{name}: {entry.precision} {entry.role}, {sum(s.ops.values())} nodes of {len(s.ops)} supported "
            f"operator types, {label}, inputs and outputs as the manifest")


def verify_package(path: str | Path, keys_dir: str | Path | None = None, allow_unsigned: bool | None = None,
                   golden: bool = True, threads: int = 1) -> Report:
    """Run every check; the report's ``ok`` is False with ``refusal`` set at the first failure."""
    from runtime.golden import check_golden
    from runtime.signing import check_package_signature, read_manifest_bytes, trust_policy

    report = Report(str(path))
    try:
        policy = trust_policy(keys_dir, allow_unsigned)
        pkg = load_package(path, verify_hashes=True, trust=policy)
        m = pkg.manifest
        report.package = m.name
        graphs = [e for e in m.files if e.role != EXTERNAL_DATA]
        report.add(f"manifest: {m.name} ({m.method}, task {m.task}); {len(m.files)} files match their sha256")
        status = check_package_signature(pkg.root, read_manifest_bytes(pkg.root), policy)
        report.signature = status.describe()
        report.add(f"signature: {report.signature}")
        for e in graphs:
            report.add(check_graph_static(pkg, e))
        for e in graphs:
            pkg.session(e.role, e.precision, threads)
        report.add(f"onnxruntime opens all {len(graphs)} graphs with the manifest's inputs and outputs")
        if golden:
            for r in check_golden(pkg, threads):
                line = (f"golden {r.file}: {r.cases} cases, worst error {r.worst_frac:.2e} of range "
                        f"(tolerance {r.tolerance:.0e}, {r.precision})")
                if not r.ok:
                    raise VerifyError(f"{line}: does not reproduce the exporter's outputs on {platform.machine()}")
                report.add(line)
            g = m.golden
            checked = ", ".join(map(str, g.get("checked_architectures", []))) or "none recorded"
            report.add(f"golden vectors from {g.get('reference_platform', {}).get('machine', '?')}; "
                       f"architectures checked at release: {checked}; reproduced here on {platform.machine()}")
        report.ok = True
    except PackageError as exc:  # SignatureError, GoldenError, VerifyError are PackageErrors
        report.refusal = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except OSError as exc:
        report.refusal = f"{exc.filename or path}: {exc.strerror or exc}"
    except Exception as exc:  # onnxruntime's own load errors: still one line, never a traceback
        report.refusal = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imle-verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", help="package directory (e.g. /opt/imle/models/active)")
    p.add_argument("--trusted-keys", default=None, metavar="DIR",
                   help="trusted public keys (default: $IMLE_TRUSTED_KEYS, else /etc/imle-policy/trusted-keys)")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="development: accept an unsigned package even when keys are trusted")
    p.add_argument("--no-golden", action="store_true", help="skip re-running the golden vectors")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the verdict")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        print("imle-verify: error: --threads must be >= 1", file=sys.stderr)
        return 2
    r = verify_package(args.package, args.trusted_keys, True if args.allow_unsigned else None,
                       golden=not args.no_golden, threads=args.threads)
    if not args.quiet:
        for line in r.lines:
            print(f"  ok  {line}")
    if not r.ok:
        print(f"imle-verify: REFUSED {args.package}: {r.refusal}", file=sys.stderr)
        return 1
    print(f"imle-verify: verified {args.package} ({r.signature}) on {r.architecture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
