"""Ed25519 signatures over a package's ``manifest.json`` and the robot's trust policy.

The manifest hashes every file of the package, so one signature over the exact manifest bytes covers
the whole package. The signature lives beside it in ``manifest.sig`` (a small JSON object). Keys are
PEM files: the private key (PKCS#8, mode 0600) stays on the release machine; public keys (``*.pub``)
go into the robot's trusted-keys directory. Once that directory holds any key, an unsigned package or
one signed by another key is refused; a signature that does not verify is always refused.

    trust = trust_policy()                    # IMLE_TRUSTED_KEYS or /etc/imle-policy/trusted-keys
    status = check_package_signature(root, manifest_bytes, trust)   # SignatureError on refusal

Runs on the robot: the `robot` extra carries ``cryptography``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from runtime.package import MANIFEST, SIGNATURE, PackageError

SIG_FORMAT = "imle-policy-signature"
SIG_VERSION = 1
# what is signed: this context, then the manifest bytes (a signature made for anything else never verifies here)
CONTEXT = b"imle-policy manifest signature v1\n"
DEFAULT_TRUSTED_KEYS = Path("/etc/imle-policy/trusted-keys")
ENV_TRUSTED_KEYS = "IMLE_TRUSTED_KEYS"
ENV_ALLOW_UNSIGNED = "IMLE_ALLOW_UNSIGNED"
SHIPPED_KEYS = Path(__file__).resolve().parent / "keys"  # the project's public key(s), package data
MAX_SIG_BYTES = 4096
MAX_KEY_BYTES = 4096
MAX_TRUSTED_KEYS = 64
MAX_MANIFEST_SIGN_BYTES = 4 << 20


class SignatureError(PackageError):
    """A package or key that the trust policy refuses; one line naming what and why."""


# ---------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class PublicKey:
    key_id: str  # first 16 hex digits of sha256(raw 32-byte key)
    raw: bytes
    source: str  # file it came from

    def verify(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
            return True
        except InvalidSignature:
            return False


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_small(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, refusing symlinks, other file types and files above ``limit``."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise SignatureError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise SignatureError(f"{what} {path} is a symlink; refused")
    if not stat.S_ISREG(st.st_mode):
        raise SignatureError(f"{what} {path} is not a regular file")
    if st.st_size > limit:
        raise SignatureError(f"{what} {path} has {st.st_size} bytes; at most {limit}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise SignatureError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if len(data) > limit:
        raise SignatureError(f"{what} {path} has more than {limit} bytes")
    return data


def load_public_key(path: str | Path) -> PublicKey:
    """An Ed25519 public key from a PEM file; SignatureError naming the file for anything else."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    data = _read_small(path, MAX_KEY_BYTES, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):  # cryptography's errors for garbage / unsupported PEM
        raise SignatureError(f"public key {path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"public key {path} is a {type(key).__name__}, expected Ed25519")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(key_id(raw), raw, str(path))


def load_private_key(path: str | Path):
    """An Ed25519 private key from an unencrypted PKCS#8 PEM file that only its owner can read."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    data = _read_small(path, MAX_KEY_BYTES, "private key")
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise SignatureError(f"private key {path} has mode {stat.S_IMODE(mode):04o}; others can read it "
                             f"(chmod 600 {path})")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SignatureError(f"private key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"private key {path} is a {type(key).__name__}, expected Ed25519")
    return key


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new key pair (private 0600, created exclusively: never overwrites); returns the key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if os.path.lexists(p):
            raise SignatureError(f"{p} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key()
    pub_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pub_pem)
    return key_id(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def public_key_of(private_key) -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(key_id(raw), raw, "private key")


def load_key_dir(directory: str | Path) -> list[PublicKey]:
    """Every ``*.pub`` in ``directory`` (other names are ignored); a missing directory holds no keys.
    A ``.pub`` file that is not an Ed25519 public key is refused, never skipped."""
    directory = Path(directory)
    if not directory.exists():
        return []
    if not directory.is_dir():
        raise SignatureError(f"trusted keys {directory} is not a directory")
    names = sorted(n for n in os.listdir(directory) if n.endswith(".pub"))
    if len(names) > MAX_TRUSTED_KEYS:
        raise SignatureError(f"trusted keys {directory} has {len(names)} keys; at most {MAX_TRUSTED_KEYS}")
    keys = [load_public_key(directory / n) for n in names]
    return list({k.key_id: k for k in keys}.values())


def shipped_keys() -> list[PublicKey]:
    """The project's public key(s) that ship with the code (not trusted unless installed as trusted)."""
    return load_key_dir(SHIPPED_KEYS)


# ---------------------------------------------------------------------------- signature files
@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes  # 64 bytes


def encode_signature(sig: Signature) -> bytes:
    return (json.dumps({"format": SIG_FORMAT, "version": SIG_VERSION, "algorithm": "ed25519", "key_id": sig.key_id,
                        "signature": base64.b64encode(sig.signature).decode()}, indent=2) + "\n").encode()


def parse_signature(data: bytes, where: str = SIGNATURE) -> Signature:
    """Strict parse of a ``manifest.sig``: SignatureError naming the field for anything unexpected."""
    if len(data) > MAX_SIG_BYTES:
        raise SignatureError(f"{where} has {len(data)} bytes; at most {MAX_SIG_BYTES}")
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SignatureError(f"{where} is not valid JSON (truncated or corrupt)") from None
    if not isinstance(d, dict):
        raise SignatureError(f"{where} is not a JSON object")
    want = {"format": SIG_FORMAT, "version": SIG_VERSION, "algorithm": "ed25519"}
    for k, v in want.items():
        if d.get(k) != v or type(d.get(k)) is not type(v):
            raise SignatureError(f"{where} field '{k}' is {str(d.get(k))[:40]!r}, expected {v!r}")
    extra = set(d) - set(want) - {"key_id", "signature"}
    if extra:
        raise SignatureError(f"{where} has unknown fields {sorted(extra)[:5]}")
    kid, sig = d.get("key_id"), d.get("signature")
    if not isinstance(kid, str) or len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
        raise SignatureError(f"{where} field 'key_id' is not 16 lower-case hex digits")
    if not isinstance(sig, str):
        raise SignatureError(f"{where} field 'signature' must be a base64 string")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{where} field 'signature' is not valid base64") from None
    if len(raw) != 64:
        raise SignatureError(f"{where} field 'signature' has {len(raw)} bytes; an Ed25519 signature has 64")
    return Signature(kid, raw)


def sign_bytes(private_key, manifest_bytes: bytes) -> Signature:
    return Signature(public_key_of(private_key).key_id, private_key.sign(CONTEXT + manifest_bytes))


# ---------------------------------------------------------------------------- trust policy
@dataclass
class TrustPolicy:
    keys: list[PublicKey] = field(default_factory=list)  # trusted keys; empty = signatures optional
    allow_unsigned: bool = False  # development: accept unsigned packages (or ones signed by unknown keys)
    source: str = ""  # where the keys came from, for messages

    @property
    def enforcing(self) -> bool:
        return bool(self.keys) and not self.allow_unsigned


def trust_policy(keys_dir: str | Path | None = None, allow_unsigned: bool | None = None) -> TrustPolicy:
    """The robot's policy: keys from ``keys_dir``, else $IMLE_TRUSTED_KEYS, else /etc/imle-policy/trusted-keys;
    ``allow_unsigned`` from the argument, else $IMLE_ALLOW_UNSIGNED=1."""
    d = Path(keys_dir) if keys_dir is not None else Path(os.environ.get(ENV_TRUSTED_KEYS) or DEFAULT_TRUSTED_KEYS)
    if allow_unsigned is None:
        env = os.environ.get(ENV_ALLOW_UNSIGNED, "")
        if env not in ("", "0", "1"):
            raise SignatureError(f"{ENV_ALLOW_UNSIGNED} is {env[:20]!r}; expected 1 (allow) or 0 / unset")
        allow_unsigned = env == "1"
    return TrustPolicy(load_key_dir(d), bool(allow_unsigned), str(d))


@dataclass(frozen=True)
class SignatureStatus:
    signed: bool
    key_id: str | None = None
    verified: bool = False  # the signature was checked against a known key and is valid
    trusted: bool = False  # ... and that key is in the trust policy
    note: str = ""

    def describe(self) -> str:
        if not self.signed:
            return "unsigned" + (f" ({self.note})" if self.note else "")
        who = "a trusted key" if self.trusted else "a known key (not in the trusted keys)" if self.verified \
            else "an unknown key (not checked)"
        return f"signed by {self.key_id}, {who}" + (f"; {self.note}" if self.note else "")


def check_package_signature(root: str | Path, manifest_bytes: bytes,
                            policy: TrustPolicy | None = None) -> SignatureStatus:
    """Check ``root/manifest.sig`` against ``manifest_bytes`` (the bytes the caller parsed) under ``policy``.

    Refused (SignatureError): a malformed signature file; a signature by a trusted or shipped key that
    does not verify; with trusted keys and no development override, an unsigned package or one signed
    by a key that is not trusted."""
    policy = policy if policy is not None else trust_policy()
    root = Path(root)
    sig_path = root / SIGNATURE
    name = root.name
    if not os.path.lexists(sig_path):
        if policy.enforcing:
            raise SignatureError(f"package {name} is not signed ({SIGNATURE} missing) and {len(policy.keys)} "
                                 f"trusted key(s) are configured in {policy.source}; sign it with imle-sign, "
                                 f"or set {ENV_ALLOW_UNSIGNED}=1 for development")
        return SignatureStatus(False, note=("allowed: development override" if policy.keys
                                            else "no trusted keys configured"))
    sig = parse_signature(_read_small(sig_path, MAX_SIG_BYTES, "signature"), f"{name}/{SIGNATURE}")
    message = CONTEXT + manifest_bytes
    trusted = {k.key_id: k for k in policy.keys}
    if sig.key_id in trusted:
        if not trusted[sig.key_id].verify(sig.signature, message):
            raise SignatureError(f"package {name}: {SIGNATURE} does not verify with trusted key {sig.key_id} "
                                 f"({trusted[sig.key_id].source}): the manifest was changed after signing")
        return SignatureStatus(True, sig.key_id, verified=True, trusted=True)
    known = {k.key_id: k for k in shipped_keys()}
    verified = False
    if sig.key_id in known:
        if not known[sig.key_id].verify(sig.signature, message):
            raise SignatureError(f"package {name}: {SIGNATURE} does not verify with the project key {sig.key_id}: "
                                 "the manifest was changed after signing")
        verified = True
    if policy.enforcing:
        have = ", ".join(sorted(trusted))
        raise SignatureError(f"package {name} is signed by key {sig.key_id}, which is not trusted "
                             f"(trusted in {policy.source}: {have})")
    return SignatureStatus(True, sig.key_id, verified=verified, trusted=False,
                           note="allowed: development override" if policy.keys else "no trusted keys configured")


def read_manifest_bytes(root: str | Path) -> bytes:
    """The exact bytes of ``root/manifest.json`` (a regular file, not a symlink, bounded)."""
    return _read_small(Path(root) / MANIFEST, MAX_MANIFEST_SIGN_BYTES, "manifest")


def sign_package(root: str | Path, private_key_path: str | Path) -> Signature:
    """Sign ``root``'s manifest after checking that every file matches its hash; writes ``manifest.sig``
    atomically. Returns the signature."""
    from runtime.package import load_package

    root = Path(root)
    key = load_private_key(private_key_path)
    data = read_manifest_bytes(root)
    load_package(root, verify_hashes=True, trust=False)  # never sign a broken package (any old signature is replaced)
    if read_manifest_bytes(root) != data:
        raise SignatureError(f"{root / MANIFEST} changed while signing; try again")
    sig = sign_bytes(key, data)
    tmp = root / f".{SIGNATURE}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(encode_signature(sig))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / SIGNATURE)
    return sig
