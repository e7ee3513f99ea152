"""Package signatures: key files, manifest.sig, and the robot's trust policy at load time."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flash_fixtures import make_key, make_package
from runtime import Policy
from runtime.keys_cli import keygen_main, sign_main
from runtime.package import PackageError, load_package, sha256_file
from runtime.signing import (ENV_ALLOW_UNSIGNED, ENV_TRUSTED_KEYS, SIGNATURE, SignatureError, check_package_signature,
                             load_key_dir, load_private_key, read_manifest_bytes, shipped_keys, trust_policy)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "exported_models" / "pusht-state-imle"


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    """A signed package, its key, and the trusted-keys directory installed through the environment."""
    monkeypatch.delenv(ENV_ALLOW_UNSIGNED, raising=False)
    key, trusted = make_key(tmp_path)
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(trusted))
    return make_package(tmp_path / "pkg", key=key), key, trusted


def test_keygen_writes_private_0600_and_refuses_to_overwrite(tmp_path, capsys):
    key = tmp_path / "k" / "release.key"
    assert keygen_main(["--out", str(key)]) == 0
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert load_key_dir(key.parent)[0].key_id in capsys.readouterr().out
    assert keygen_main(["--out", str(key)]) == 2
    assert "exists; refusing to overwrite" in capsys.readouterr().err


def test_signed_package_loads_and_runs_with_its_key_trusted(keyed):
    pkg, _, trusted = keyed
    st = check_package_signature(pkg, read_manifest_bytes(pkg), trust_policy())
    assert st.trusted and st.verified and st.key_id == load_key_dir(trusted)[0].key_id
    assert Policy(pkg).precision == "int8"


def test_unsigned_package_refused_once_a_key_is_trusted_unless_allowed(keyed, monkeypatch):
    pkg, _, _ = keyed
    (pkg / SIGNATURE).unlink()
    with pytest.raises(SignatureError, match="is not signed .*IMLE_ALLOW_UNSIGNED=1"):
        Policy(pkg)
    monkeypatch.setenv(ENV_ALLOW_UNSIGNED, "1")
    Policy(pkg)
    monkeypatch.setenv(ENV_ALLOW_UNSIGNED, "yes")
    with pytest.raises(SignatureError, match="IMLE_ALLOW_UNSIGNED is 'yes'"):
        load_package(pkg)


def test_without_trusted_keys_unsigned_packages_load(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(tmp_path / "none"))
    pkg = make_package(tmp_path / "pkg")
    assert load_package(pkg).manifest.name == "tiny"


def test_package_signed_by_another_key_is_refused(keyed, tmp_path):
    pkg, _, _ = keyed
    other, _ = make_key(tmp_path, "other")
    assert sign_main([str(pkg), "--key", str(other)]) == 0
    with pytest.raises(SignatureError, match="signed by key .* which is not trusted"):
        load_package(pkg)


def test_files_and_hashes_rewritten_together_are_refused(keyed):
    """The attack a hash alone cannot stop: new graph, manifest hash updated to match."""
    from flash_fixtures import fp32_graph

    pkg, _, _ = keyed
    fp32_graph(pkg / "g.onnx", gain=3.0)
    m = json.loads((pkg / "manifest.json").read_text())
    m["files"][0]["sha256"] = sha256_file(pkg / "g.onnx")
    (pkg / "manifest.json").write_text(json.dumps(m, indent=2))
    with pytest.raises(SignatureError, match="does not verify with trusted key .*changed after signing"):
        load_package(pkg)
    (pkg / "manifest.json").write_text(json.dumps(m, indent=2) + " ")  # even one byte
    with pytest.raises(SignatureError, match="does not verify"):
        load_package(pkg)


@pytest.mark.parametrize("content, message", [
    (b"", "not valid JSON"),
    (b'{"format": "imle-policy-signature", "version": 1, "algorithm": "ed25519", "key_id": "00', "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"format": "x"}', "field 'format'"),
    (None, "has 63 bytes"),
    (b"{" + b" " * 5000 + b"}", "at most 4096"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_malformed_signature_files_are_refused_with_one_line(keyed, content, message):
    pkg, _, _ = keyed
    good = json.loads((pkg / SIGNATURE).read_text())
    if content is None:  # a truncated signature value
        good["signature"] = base64.b64encode(base64.b64decode(good["signature"])[:63]).decode()
        content = json.dumps(good).encode()
    (pkg / SIGNATURE).write_bytes(content)
    with pytest.raises(SignatureError, match=message) as exc:
        load_package(pkg)
    assert "\n" not in str(exc.value)


def test_symlinked_signature_is_refused(keyed, tmp_path):
    pkg, _, _ = keyed
    (pkg / SIGNATURE).rename(tmp_path / "elsewhere.sig")
    (pkg / SIGNATURE).symlink_to(tmp_path / "elsewhere.sig")
    with pytest.raises(PackageError, match="symbolic link|symlink"):
        load_package(pkg)


@pytest.mark.parametrize("content", [b"garbage", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", b""])
def test_garbage_trusted_key_file_is_refused_not_skipped(keyed, content):
    pkg, _, trusted = keyed
    (trusted / "junk.pub").write_bytes(content)
    with pytest.raises(SignatureError, match="junk.pub is not a PEM public key"):
        load_package(pkg)


def test_non_ed25519_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pub").write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(SignatureError, match="expected Ed25519"):
        load_key_dir(tmp_path)


def test_private_key_readable_by_others_is_refused(tmp_path, capsys):
    key, _ = make_key(tmp_path)
    os.chmod(key, 0o644)
    with pytest.raises(SignatureError, match="mode 0644; others can read it"):
        load_private_key(key)
    pkg = make_package(tmp_path / "pkg")
    assert sign_main([str(pkg), "--key", str(key)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_sign_refuses_a_package_whose_files_do_not_match(tmp_path, capsys):
    key, _ = make_key(tmp_path)
    pkg = make_package(tmp_path / "pkg")
    (pkg / "g.onnx").write_bytes(b"changed")
    assert sign_main([str(pkg), "--key", str(key)]) == 2
    assert "does not match its hash" in capsys.readouterr().err and not (pkg / SIGNATURE).exists()


def test_shipped_package_is_signed_by_the_shipped_project_key(monkeypatch, tmp_path):
    keys = shipped_keys()
    assert len(keys) == 1
    st = check_package_signature(SHIPPED, read_manifest_bytes(SHIPPED),
                                 trust_policy(SHIPPED.parents[1] / "runtime" / "keys"))
    assert st.trusted and st.key_id == keys[0].key_id


def test_no_private_key_is_committed():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    for f in files:
        p = REPO / f
        if p.is_file() and p.stat().st_size < 1 << 16 and p.suffix in ("", ".key", ".pem", ".pub", ".txt", ".json"):
            assert b"PRIVATE KEY-----" not in p.read_bytes(), f


def test_sign_cli_runs_as_a_console_script(tmp_path):
    key, _ = make_key(tmp_path)
    pkg = make_package(tmp_path / "pkg")
    code = "import sys; from runtime.keys_cli import sign_main; sys.exit(sign_main())"
    p = subprocess.run([sys.executable, "-c", code, str(pkg), "--key", str(key)],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "signed" in p.stdout and (pkg / SIGNATURE).is_file()
