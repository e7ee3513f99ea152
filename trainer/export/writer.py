"""Writing a package directory: the manifest (runtime.package's dataclasses) and file hashes.

A package is assembled in a sibling temporary directory and moved into place at the end, so a
failed export never leaves a half-written package behind.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from runtime.package import MANIFEST, FileEntry, Manifest, SamplerSpec, sha256_file


class PackageDirError(ValueError):
    """The output directory exists and is not a package we may replace."""


def code_version() -> str:
    """``git describe --always --dirty`` of this source tree, else the installed package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"imle-policy {version('imle-policy')}"
    except Exception:  # not installed: still a valid package, just less traceable
        return "unknown"


def staging_dir(out_dir: Path) -> Path:
    """An empty temporary directory beside ``out_dir``; refuses to clobber a non-package directory."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir / MANIFEST).is_file() and any(out_dir.iterdir()):
        raise PackageDirError(f"{out_dir} exists and is not a model package; choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def file_entry(stage: Path, name: str, precision: str, role: str, quant_format: str | None = None,
               layout: str | None = None) -> FileEntry:
    return FileEntry(name=name, sha256=sha256_file(stage / name), precision=precision, role=role,
                     quant_format=quant_format, layout=layout)


def finish(stage: Path, out_dir: Path, manifest: Manifest) -> Path:
    """Validate and write the manifest, then move the staged package to ``out_dir``."""
    manifest.validate()
    (stage / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(stage, out_dir)
    return out_dir


def derive_package(src: Path, out_dir: Path, sampler: SamplerSpec, name: str | None = None,
                   method: str | None = None) -> Path:
    """A baseline package that shares ``src``'s graphs (hard links) with another sampler (e.g. DDIM-10
    from a DDPM package): the graphs are the same network, only the numpy sampler differs.
    ``method`` relabels it (benchmarks time flow matching's Euler sampler on the same backbone)."""
    from runtime.package import load_package

    pkg = load_package(src)
    stage = staging_dir(Path(out_dir))
    for e in pkg.manifest.files:
        try:
            os.link(pkg.path(e), stage / e.name)
        except OSError:  # another file system: copy
            shutil.copy2(pkg.path(e), stage / e.name)
    m = replace(pkg.manifest, sampler=sampler, name=name or Path(out_dir).name, method=method or pkg.manifest.method)
    return finish(stage, Path(out_dir), m)
