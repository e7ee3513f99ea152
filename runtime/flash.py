"""``imle-flash PACKAGE TARGET``: put a model on a robot so that an interruption never leaves it without one.

TARGET is a local directory (the robot itself, or a mounted SD card) or ``user@host:path`` over the
system's ssh. The target is a versioned store::

    TARGET/versions/<name>-<hash12>/    complete, verified packages (hash12: sha256 of manifest.json)
    TARGET/active -> versions/<id>      what the robot runs: imle-run TARGET/active
    TARGET/history.json                 activation stack (for --rollback, --list)

A flash copies the package into ``versions/.incoming-*``, verifies the copy there (imle-verify's
checks, under the target's trusted keys), renames it to ``versions/<id>``, then switches ``active``
with a symlink made under a temporary name and ``os.replace`` (atomic), and finally drops versions
beyond the last ``--keep``. Killed at any moment, ``active`` still names a complete, verified version;
leftovers (``.incoming-*``, ``.trash-*``) are removed by the next flash. Over ssh the package travels
as a tar stream into ``imle-flash --receive PATH`` on the robot, which does the same steps locally.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from runtime.package import MANIFEST, MAX_FILE_BYTES, MAX_FILES, SIGNATURE, PackageError, read_manifest

VERSIONS = "versions"
ACTIVE = "active"
HISTORY = "history.json"
LOCK = ".lock"
INCOMING = ".incoming-"
TRASH = ".trash-"
KILL_ENV = "IMLE_FLASH_KILL_AT"  # tests: SIGKILL this process at the named stage
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_VERSION_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,80}-[0-9a-f]{12}(-[0-9]{1,3})?")
_REMOTE = re.compile(r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@)?(?P<host>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<path>.+)")
MAX_TOTAL_BYTES = 2 << 30


class FlashError(RuntimeError):
    """A flash, list or rollback that could not be done; one line. The active version is unchanged."""


def _stage(name: str) -> None:
    """Test hook: die here, as a power cut or kill -9 would."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_name(name: str) -> bool:
    return bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


# ---------------------------------------------------------------------------- the store (robot side)
@dataclass
class Version:
    id: str
    active: bool
    flashed_at: str


class Store:
    def __init__(self, root: str | Path, create: bool = False):
        self.root = Path(root)
        if create:
            (self.root / VERSIONS).mkdir(parents=True, exist_ok=True)
        if not (self.root / VERSIONS).is_dir():
            raise FlashError(f"{self.root} is not a model store (no {VERSIONS}/ directory); "
                             "flash a package into it first")
        for p in (self.root, self.root / VERSIONS):
            if p.is_symlink():
                raise FlashError(f"{p} is a symbolic link; a store's directories must be real")
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ locking and cleanup
    def __enter__(self) -> "Store":
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FlashError(f"another imle-flash is working on {self.root}; try again when it has finished") from None
        self._lock_fd = fd
        self._cleanup()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _cleanup(self) -> None:
        """Remove what an interrupted flash left behind (never a complete version, never ``active``)."""
        for d in (self.root / VERSIONS, self.root):
            for entry in os.scandir(d):
                if entry.name.startswith((INCOMING, TRASH, ".active.tmp-", ".history.tmp-")):
                    p = Path(entry.path)
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading
    def active_id(self) -> str | None:
        link = self.root / ACTIVE
        if not link.is_symlink():
            if os.path.lexists(link):
                raise FlashError(f"{link} exists and is not a symbolic link; move it away")
            return None
        target = os.readlink(link)
        parts = Path(target).parts
        if len(parts) != 2 or parts[0] != VERSIONS or not _VERSION_ID.fullmatch(parts[1]):
            raise FlashError(f"{link} points at {target[:80]!r}, not at a version of this store")
        return parts[1]

    def versions(self) -> list[str]:
        return sorted(e.name for e in os.scandir(self.root / VERSIONS)
                      if _VERSION_ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False))

    def history(self) -> list[dict]:
        p = self.root / HISTORY
        try:
            if p.is_symlink():
                raise FlashError(f"{p} is a symbolic link; refused")
            data = p.read_bytes()[: 1 << 20]
            h = json.loads(data.decode("utf-8"))
        except FileNotFoundError:
            h = []
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise FlashError(f"{p} is corrupt; move it away (the active link is unaffected)") from None
        if not isinstance(h, list) or not all(isinstance(e, dict) and isinstance(e.get("id"), str)
                                              and isinstance(e.get("at"), str) for e in h):
            raise FlashError(f"{p} is not a list of activations; move it away (the active link is unaffected)")
        # the active link is the truth: an activation whose history write was interrupted is added back
        active = self.active_id()
        if active is not None and (not h or h[-1]["id"] != active):
            h.append({"id": active, "at": "?"})
        return h

    def _write_history(self, h: list[dict]) -> None:
        tmp = self.root / f".history.tmp-{secrets.token_hex(4)}"
        with open(tmp, "w") as fh:
            json.dump(h[-200:], fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / HISTORY)
        _fsync_dir(self.root)

    def list(self) -> list[Version]:
        active = self.active_id()
        when = {e["id"]: e["at"] for e in self.history()}
        return [Version(v, v == active, when.get(v, "?")) for v in self.versions()]

    # ------------------------------------------------------------------ writing
    def receive(self, files: Iterable[tuple[str, BinaryIO, int]], verify_kw: dict, keep: int) -> tuple[str, list[str]]:
        """Copy ``files`` (name, stream, size) into a new version, verify it, activate it, prune.
        Returns (version id, verification lines)."""
        from runtime.verify import verify_package

        incoming = self.root / VERSIONS / f"{INCOMING}{secrets.token_hex(6)}"
        incoming.mkdir()
        try:
            seen: set[str] = set()
            total = 0
            for i, (name, stream, size) in enumerate(files):
                if not _safe_name(name) or name in seen:
                    raise FlashError(f"package file name {name[:80]!r} is not a plain, unique file name; refused")
                if len(seen) >= MAX_FILES + 2:
                    raise FlashError(f"package has more than {MAX_FILES + 2} files; refused")
                if size > MAX_FILE_BYTES or size < 0:
                    raise FlashError(f"package file {name} has {size} bytes; at most {MAX_FILE_BYTES}")
                total += size
                if total > MAX_TOTAL_BYTES:
                    raise FlashError(f"package is larger than {MAX_TOTAL_BYTES} bytes; refused")
                seen.add(name)
                _copy_exact(stream, incoming / name, size)
                _stage(f"copied-{i}")
            if MANIFEST not in seen:
                raise FlashError(f"the package sent has no {MANIFEST}")
            _fsync_dir(incoming)
            _stage("copied")
            report = verify_package(incoming, **verify_kw)
            if not report.ok:
                raise FlashError(f"verification on the target refused the package: {report.refusal}")
            _stage("verified")
            digest = hashlib.sha256((incoming / MANIFEST).read_bytes()).hexdigest()[:12]
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", report.package).lstrip(".-")[:64] or "package"
            vid = f"{base}-{digest}"
            dest = self.root / VERSIONS / vid
            n = 0
            while dest.exists() and not _same_files(dest, incoming):
                n += 1  # an existing copy that differs (corrupted since): keep it, store the good one beside it
                vid = f"{base}-{digest}-{n}"
                dest = self.root / VERSIONS / vid
            if dest.exists():
                shutil.rmtree(incoming)  # identical version already stored: re-activate it
            else:
                os.rename(incoming, dest)
                _fsync_dir(self.root / VERSIONS)
            _stage("stored")
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        self.activate(vid)
        self.prune(keep)
        return vid, report.lines

    def activate(self, vid: str, record: bool = True) -> None:
        """Point ``active`` at ``versions/vid`` atomically (symlink under a temporary name, then os.replace)."""
        if not _VERSION_ID.fullmatch(vid) or not (self.root / VERSIONS / vid).is_dir():
            raise FlashError(f"no version {vid[:80]!r} in {self.root}")
        h = self.history()
        tmp = self.root / f".active.tmp-{secrets.token_hex(4)}"
        os.symlink(f"{VERSIONS}/{vid}", tmp)
        _stage("linked")
        os.replace(tmp, self.root / ACTIVE)
        _fsync_dir(self.root)
        _stage("activated")
        if record:
            self._write_history(h + [{"id": vid, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}])
        _stage("recorded")

    def rollback(self, to: str | None = None) -> str:
        """Activate ``to``, else the version active before the current one; returns its id."""
        h = self.history()
        have = set(self.versions())
        if to is not None:
            if to not in have:
                raise FlashError(f"no version {to[:80]!r} in {self.root} (see --list)")
            self.activate(to)
            return to
        current = self.active_id()
        stack = [e for e in h if e["id"] in have]
        while stack and stack[-1]["id"] == current:
            stack.pop()
        if not stack:
            raise FlashError(f"no earlier version to roll back to in {self.root} (active: {current})")
        prev = stack[-1]["id"]
        self.activate(prev, record=False)
        self._write_history(stack)
        return prev

    def prune(self, keep: int) -> list[str]:
        """Remove versions beyond the ``keep`` most recently active (never the active one)."""
        active = self.active_id()
        order: list[str] = []
        for e in reversed(self.history()):
            if e["id"] not in order:
                order.append(e["id"])
        kept = set(order[:max(keep, 1)]) | {active}
        removed = []
        for v in self.versions():
            if v not in kept:
                trash = self.root / VERSIONS / f"{TRASH}{secrets.token_hex(4)}"
                os.rename(self.root / VERSIONS / v, trash)  # the version vanishes in one step
                _stage("pruning")
                shutil.rmtree(trash, ignore_errors=True)
                removed.append(v)
        if removed:
            self._write_history([e for e in self.history() if e["id"] not in removed])
        return removed


def _copy_exact(stream: BinaryIO, dest: Path, size: int) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left:
            block = stream.read(min(left, 1 << 20))
            if not block:
                raise FlashError(f"{dest.name}: the copy ended after {size - left} of {size} bytes")
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())


def _same_files(a: Path, b: Path) -> bool:
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return False
    for n in names:
        with open(a / n, "rb") as fa, open(b / n, "rb") as fb:
            if hashlib.sha256(fa.read()).digest() != hashlib.sha256(fb.read()).digest():
                return False
    return True


# ---------------------------------------------------------------------------- the sender (desktop side)
def package_files(src: str | Path) -> list[str]:
    """The files of a package to send: manifest, signature (if any) and the listed files, all regular."""
    src = Path(src)
    if not src.is_dir():
        raise FlashError(f"package not found: {src}")
    manifest = read_manifest(src, trust=False)
    names = [MANIFEST] + ([SIGNATURE] if os.path.lexists(src / SIGNATURE) else []) + [f.name for f in manifest.files]
    for n in names:
        if (src / n).is_symlink() or not (src / n).is_file():
            raise FlashError(f"package file {src / n} is missing, a symbolic link or not a regular file")
    return names


def _open_files(src: Path, names: list[str]) -> Iterator[tuple[str, BinaryIO, int]]:
    for n in names:
        fd = os.open(src / n, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            yield n, fh, os.fstat(fh.fileno()).st_size


class _TarMember:
    """A member's stream whose read errors (a cut transfer) are one-line FlashErrors."""

    def __init__(self, fh):
        self._fh = fh

    def read(self, n: int) -> bytes:
        try:
            return self._fh.read(n)
        except (tarfile.TarError, EOFError) as exc:
            raise FlashError(f"the package stream ended early ({exc}); was the transfer cut?") from None


def _tar_files(stream: BinaryIO) -> Iterator[tuple[str, BinaryIO, int]]:
    """Members of a tar stream as (name, stream, size); anything but flat regular files is refused."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for m in tf:
                if not m.isreg():
                    raise FlashError(f"tar member {m.name[:80]!r} is not a regular file; refused")
                if not _safe_name(m.name):
                    raise FlashError(f"tar member name {m.name[:80]!r} is not a plain file name; refused")
                yield m.name, _TarMember(tf.extractfile(m)), m.size
    except tarfile.TarError as exc:
        raise FlashError(f"the package stream is not a valid tar ({exc}); was the transfer cut?") from None


def parse_target(target: str) -> tuple[str | None, str]:
    """(ssh destination or None, path). A path starting with / or . is always local."""
    if target.startswith(("/", ".")) or ":" not in target:
        return None, target
    m = _REMOTE.fullmatch(target)
    if m is None:
        raise FlashError(f"target {target[:80]!r} is neither a local path nor user@host:path")
    dest = f"{m['user']}@{m['host']}" if m["user"] else m["host"]
    if any(c in m["path"] for c in "\n\r\0"):
        raise FlashError("target path has control characters")
    return dest, m["path"]


@dataclass
class Remote:
    dest: str
    path: str
    ssh: list[str]  # e.g. ["ssh", "-p", "2222"]
    flash_cmd: list[str]  # e.g. ["imle-flash"] on the robot

    def run(self, args: list[str], stdin=None, timeout: float = 600) -> subprocess.CompletedProcess:
        remote = " ".join(shlex.quote(a) for a in [*self.flash_cmd, *args])
        try:
            return subprocess.run([*self.ssh, "-o", "BatchMode=yes", "--", self.dest, remote], stdin=stdin,
                                  capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise FlashError(f"{self.ssh[0]} not found: install an ssh client") from None
        except subprocess.TimeoutExpired:
            raise FlashError(f"{self.dest}: no answer within {timeout:.0f} s") from None


def _remote_result(p: subprocess.CompletedProcess, dest: str) -> str:
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or "").splitlines() if ln.strip()]
        raise FlashError(f"{dest}: {lines[-1] if lines else f'ssh exited with {p.returncode}'}")
    return p.stdout


def flash_remote(src: Path, remote: Remote, keep: int, extra: list[str]) -> str:
    import threading

    names = package_files(src)

    r, w = os.pipe()
    errors: list[BaseException] = []

    def feed() -> None:  # stream a tar of exactly these files into ssh's stdin
        try:
            with os.fdopen(w, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                for n, fh, size in _open_files(src, names):
                    info = tarfile.TarInfo(n)
                    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
                    tf.addfile(info, fh)
        except (BrokenPipeError, OSError) as exc:
            errors.append(exc)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    with os.fdopen(r, "rb") as rin:
        p = remote.run(["--receive", remote.path, "--keep", str(keep), *extra], stdin=rin)
    t.join(timeout=10)
    return _remote_result(p, remote.dest)


# ---------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imle-flash", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", nargs="?", help="package directory to flash (omit with --list / --rollback)")
    p.add_argument("target", help="store: a local directory, or user@host:path over ssh")
    p.add_argument("--list", action="store_true", help="list the stored versions (* = active)")
    p.add_argument("--rollback", action="store_true", help="activate the version that was active before")
    p.add_argument("--to", default=None, metavar="ID", help="with --rollback: activate this version")
    p.add_argument("--keep", type=int, default=3, help="versions kept after a flash (default %(default)s)")
    p.add_argument("--trusted-keys", default=None, metavar="DIR",
                   help="trusted public keys for the verification on the target (default: the target's "
                        "$IMLE_TRUSTED_KEYS or /etc/imle-policy/trusted-keys)")
    p.add_argument("--allow-unsigned", action="store_true", help="development: verify without requiring a signature")
    p.add_argument("--ssh", default=os.environ.get("IMLE_FLASH_SSH", "ssh"),
                   help="ssh command and options, e.g. 'ssh -p 2222 -i KEY' (default: $IMLE_FLASH_SSH or ssh)")
    p.add_argument("--remote-flash", default=os.environ.get("IMLE_FLASH_REMOTE", "imle-flash"),
                   help="imle-flash on the robot (default: %(default)s)")
    p.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)  # robot side of an ssh flash
    return p


def _verify_kw(args) -> dict:
    return {"keys_dir": args.trusted_keys, "allow_unsigned": True if args.allow_unsigned else None}


def _print_list(versions: list[Version]) -> str:
    if not versions:
        return "no versions stored\n"
    return "".join(f"{'*' if v.active else ' '} {v.id}  flashed {v.flashed_at}{'  (active)' if v.active else ''}\n"
                   for v in versions)


def _local(args) -> str:
    if args.receive:  # robot side: the package arrives as a tar on stdin
        with Store(args.target, create=True) as st:
            vid, lines = st.receive(_tar_files(sys.stdin.buffer), _verify_kw(args), args.keep)
            return "".join(f"  ok  {ln}\n" for ln in lines) + f"active: {vid}\n"
    if args.list:
        return _print_list(Store(args.target).list())
    if args.rollback:
        with Store(args.target) as st:
            return f"rolled back; active: {st.rollback(args.to)}\n"
    src = Path(args.package)
    names = package_files(src)
    with Store(args.target, create=True) as st:
        vid, lines = st.receive(_open_files(src, names), _verify_kw(args), args.keep)
    return "".join(f"  ok  {ln}\n" for ln in lines) + f"active: {vid}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.keep < 1:
            raise FlashError("--keep must be >= 1")
        if not (args.list or args.rollback or args.receive) and not args.package:
            raise FlashError("give a PACKAGE to flash, or --list / --rollback")
        if args.to and not args.rollback:
            raise FlashError("--to goes with --rollback")
        if args.list or args.rollback or args.receive:  # single positional is the target
            if args.package and args.target:
                raise FlashError("--list / --rollback take only the TARGET")
        dest, path = parse_target(args.target) if not args.receive else (None, args.target)
        if dest is None:
            sys.stdout.write(_local(args))
            return 0
        remote = Remote(dest, path, shlex.split(args.ssh), shlex.split(args.remote_flash))
        extra = (["--allow-unsigned"] if args.allow_unsigned else []) + \
            (["--trusted-keys", args.trusted_keys] if args.trusted_keys else [])
        if args.list:
            out = _remote_result(remote.run(["--list", path]), dest)
        elif args.rollback:
            out = _remote_result(remote.run(["--rollback", path] + (["--to", args.to] if args.to else [])), dest)
        else:
            out = flash_remote(Path(args.package), remote, args.keep, extra)
        sys.stdout.write(out)
        return 0
    except (FlashError, PackageError) as exc:
        print(f"imle-flash: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"imle-flash: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imle-flash: interrupted; the active version is unchanged unless 'active:' was printed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
