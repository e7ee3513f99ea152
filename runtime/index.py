"""``exported_models/index.json``: the shipped packages with versions, hashes and signing keys.

    python -m runtime.index exported_models          # rewrite the index
    python -m runtime.index exported_models --check  # exit 1 if it is out of date (CI, tests)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from runtime.package import MANIFEST, SIGNATURE, PackageError, load_package
from runtime.signing import parse_signature, read_manifest_bytes

INDEX = "index.json"


def build_index(models: str | Path) -> dict:
    """One entry per package directory under ``models`` (sorted by name)."""
    models = Path(models)
    entries = []
    for d in sorted(p for p in models.iterdir() if p.is_dir() and (p / MANIFEST).is_file()):
        pkg = load_package(d, trust=False)
        m = pkg.manifest
        data = read_manifest_bytes(d)
        sig = parse_signature((d / SIGNATURE).read_bytes()) if (d / SIGNATURE).is_file() else None
        entries.append({
            "name": m.name, "path": d.name, "method": m.method, "task": m.task,
            "version": f"{m.name}-{hashlib.sha256(data).hexdigest()[:12]}",  # imle-flash's version id
            "manifest_sha256": hashlib.sha256(data).hexdigest(),
            "files": {f.name: f.sha256 for f in m.files}, "precisions": m.precisions(),
            "signed_by": sig.key_id if sig else None,
            "golden_checked_architectures": (m.golden or {}).get("checked_architectures", []),
            "score": m.evaluation.score if m.evaluation else None,
        })
    return {"format": "imle-policy-index", "version": 1, "packages": entries}


def render(index: dict) -> str:
    return json.dumps(index, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.index", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="?", default="exported_models")
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    try:
        text = render(build_index(args.models))
    except PackageError as exc:
        print(f"runtime.index: error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.models) / INDEX
    if args.check:
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is out of date: run python -m runtime.index {args.models}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
