"""``imle-bundle``: everything a robot without network needs, in one directory.

    imle-bundle --platform manylinux_2_28_aarch64 --python 3.11 --out robot-bundle \\
                --package exported_models/pusht-state-imle

writes ``wheels/`` (the project wheel and the ``robot`` extra's wheels for that platform: pip download
with --only-binary), ``models/<name>/`` (chosen packages, verified here first), ``trusted-keys/`` (the
project's public key unless --keys is given), ``install.sh`` (no network: pip --no-index) and
``SHA256SUMS``. Copy the directory to the robot (USB stick, SD card) and run ``sh install.sh``.
Note: ``manylinux2014_aarch64`` finds no onnxruntime >= 1.17; ``manylinux_2_28_aarch64`` does
(Raspberry Pi OS bookworm and Debian 12 have glibc 2.36).
Building needs the network (pip download) and a source checkout (the project wheel).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from runtime.package import PackageError

SOURCE = Path(__file__).resolve().parents[1]
_PLATFORM = re.compile(r"[a-z0-9_]+")
_PYTHON = re.compile(r"3\.[0-9]{1,2}")

INSTALL_SH = r"""#!/bin/sh
# Offline install of imle-policy on the robot: no network is used (pip --no-index).
#   sh install.sh                 # venv in $IMLE_PREFIX (default /opt/imle), keys in $IMLE_TRUSTED_KEYS
# Then: $IMLE_PREFIX/venv/bin/imle-run $IMLE_PREFIX/models/active --robot ...
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${IMLE_PREFIX:-/opt/imle}
KEYS=${IMLE_TRUSTED_KEYS:-/etc/imle-policy/trusted-keys}
PY=${PYTHON:-python3}
cd "$HERE"
sha256sum -c --quiet SHA256SUMS
"$PY" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --no-index --find-links "$HERE/wheels" "imle-policy[robot]"
mkdir -p "$KEYS"
for k in "$HERE"/trusted-keys/*.pub; do [ -e "$k" ] && cp "$k" "$KEYS/"; done
export IMLE_TRUSTED_KEYS="$KEYS"
for m in "$HERE"/models/*/; do
    [ -d "$m" ] && "$PREFIX/venv/bin/imle-flash" "$m" "$PREFIX/models"
done
"$PREFIX/venv/bin/imle-flash" --list "$PREFIX/models"
echo "installed: $PREFIX/venv (run: $PREFIX/venv/bin/imle-run $PREFIX/models/active ...)"
"""


class BundleError(RuntimeError):
    """One line: why the bundle could not be built."""


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        raise BundleError(f"{what} failed: {tail[-1] if tail else f'exit {p.returncode}'}")


def platform_tags(platform: str) -> list[str]:
    """``platform`` and the older manylinux tags a robot with that glibc also runs: pip's --platform takes
    tags literally, and e.g. cffi (needed by cryptography) ships only manylinux2014 (= 2_17) for aarch64."""
    m = re.fullmatch(r"manylinux_2_([0-9]+)_([a-z0-9_]+)", platform)
    if m is None:
        return [platform]
    minor, arch = int(m[1]), m[2]
    return [f"manylinux_2_{v}_{arch}" for v in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]


def robot_requirements(wheel: Path) -> list[str]:
    """The core and ``robot`` extra requirements, read from the built wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req, _, marker = line[len("Requires-Dist:"):].strip().partition(";")
        if not marker.strip() or re.search(r"extra\s*==\s*['\"]robot['\"]", marker):
            reqs.append(req.strip())
    return reqs


def build_bundle(out: Path, platform: str | None, python: str | None, packages: list[Path], keys: Path | None,
                 find_links: Path | None = None) -> Path:
    from runtime.flash import package_files
    from runtime.verify import verify_package

    if platform is not None and not _PLATFORM.fullmatch(platform):
        raise BundleError(f"--platform {platform[:40]!r} is not a wheel platform tag (e.g. manylinux_2_28_aarch64)")
    if python is not None and not _PYTHON.fullmatch(python):
        raise BundleError(f"--python {python[:20]!r} is not a version like 3.11")
    if (platform is None) != (python is None):
        raise BundleError("give --platform and --python together (or neither: this machine's)")
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not empty")
    if not (SOURCE / "pyproject.toml").is_file():
        raise BundleError(f"no source checkout at {SOURCE}: the project wheel is built from one")
    for pkg in packages:  # verified before anything is written: a bundle never carries a refused model
        r = verify_package(pkg)
        if not r.ok:
            raise BundleError(f"package {pkg} is refused: {r.refusal}")
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(SOURCE)], "building the project wheel")
    wheel = next(wheels.glob("imle_policy-*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(wheels)]
    if platform is not None:
        for tag in platform_tags(platform):
            cmd += ["--platform", tag]
        cmd += ["--python-version", python, "--implementation", "cp"]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    _run(cmd + robot_requirements(wheel), f"pip download for {platform or 'this machine'}")
    for pkg in packages:
        dest = out / "models" / pkg.name
        dest.mkdir(parents=True)
        for n in package_files(pkg):
            shutil.copy2(pkg / n, dest / n)
    kdir = out / "trusted-keys"
    kdir.mkdir()
    from runtime.signing import SHIPPED_KEYS, load_key_dir

    src_keys = keys if keys is not None else SHIPPED_KEYS
    for k in load_key_dir(src_keys):  # each one parsed: a garbage key never reaches the robot
        shutil.copy(k.source, kdir / Path(k.source).name)
    (out / "install.sh").write_text(INSTALL_SH)
    os.chmod(out / "install.sh", 0o755)
    sums = []
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "SHA256SUMS":
            sums.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out)}\n")
    (out / "SHA256SUMS").write_text("".join(sums))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="imle-bundle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--platform", default=None,
                   help="wheel platform tag, e.g. manylinux_2_28_aarch64 (default: this machine)")
    p.add_argument("--python", default=None, help="robot's Python, e.g. 3.11 (with --platform)")
    p.add_argument("--package", action="append", default=[], help="model package to include (repeatable)")
    p.add_argument("--keys", default=None, help="directory of trusted public keys (default: the project's key)")
    p.add_argument("--find-links", default=None, help="take wheels from this directory instead of the index")
    args = p.parse_args(argv)
    try:
        out = build_bundle(Path(args.out), args.platform, args.python, [Path(x) for x in args.package],
                           Path(args.keys) if args.keys else None, Path(args.find_links) if args.find_links else None)
    except (BundleError, PackageError) as exc:
        print(f"imle-bundle: error: {exc}", file=sys.stderr)
        return 2
    n = len(list((out / "wheels").glob("*.whl")))
    print(f"bundle: {out} ({n} wheels, {len(args.package)} packages); on the robot: sh {out.name}/install.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
