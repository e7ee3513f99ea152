"""``imle-keygen`` and ``imle-sign``: make an Ed25519 release key pair, sign a package's manifest."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.package import PackageError

DEFAULT_KEY = Path.home() / ".config" / "imle-policy" / "release.key"


def keygen_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="imle-keygen", description="Write a new Ed25519 key pair: KEY (private, "
                                "mode 0600, keep it off the robot and out of git) and KEY.pub (public: install it "
                                "in the robot's trusted-keys directory).")
    p.add_argument("--out", default=str(DEFAULT_KEY), metavar="KEY", help="private key path (default: %(default)s)")
    p.add_argument("--pub", default=None, metavar="FILE", help="public key path (default: KEY with .pub)")
    args = p.parse_args(argv)
    from runtime.signing import generate_keypair

    key = Path(args.out)
    pub = Path(args.pub) if args.pub else key.with_suffix(".pub")
    kid = _one_line("imle-keygen", generate_keypair, key, pub)
    if kid is None:
        return 2
    print(f"key {kid}: private {key} (0600), public {pub}")
    return 0


def sign_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="imle-sign", description="Sign a package: an Ed25519 signature over its exact "
                                "manifest.json bytes (which hash every file), written to manifest.sig.")
    p.add_argument("package", help="package directory")
    p.add_argument("--key", default=str(DEFAULT_KEY), help="private key (default: %(default)s)")
    args = p.parse_args(argv)
    from runtime.signing import sign_package

    sig = _one_line("imle-sign", sign_package, args.package, args.key)
    if sig is None:
        return 2
    print(f"signed {args.package} with key {sig.key_id}")
    return 0


def _one_line(prog: str, fn, *args):
    """fn(*args), or None after printing a package or file error as one line (no traceback)."""
    try:
        return fn(*args)
    except PackageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"{prog}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
    return None
