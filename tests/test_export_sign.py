"""imle-export writes golden vectors for every method and signs with --sign KEY."""
from __future__ import annotations

import pytest
import torch

from flash_fixtures import make_key
from runtime.signing import ENV_ALLOW_UNSIGNED, ENV_TRUSTED_KEYS
from runtime.verify import verify_package
from test_export import FAST, buffer_path, tiny_state  # noqa: F401  (buffer_path is a fixture)
from trainer.export import export_package
from trainer.export.cli import main as export_main


@pytest.fixture(autouse=True)
def _robot_trust(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_ALLOW_UNSIGNED, raising=False)
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(tmp_path / "no-keys"))


@pytest.mark.parametrize("method", ["rs_imle", "flow_matching"])
def test_export_writes_golden_vectors_that_verify(buffer_path, tmp_path, method):
    out = export_package(tiny_state(buffer_path, method), tmp_path / method, quantize="int8", **FAST)
    r = verify_package(out)
    assert r.ok, r.refusal
    files = {c["file"] for c in __import__("json").loads((out / "manifest.json").read_text())["golden"]["cases"]}
    assert files == {f.name for f in __import__("runtime").load_package(out).manifest.files}


def test_cli_sign_signs_the_export_and_a_bad_key_fails_before_exporting(buffer_path, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "last.pt"
    torch.save(tiny_state(buffer_path), ckpt)
    (tmp_path / "bad.key").write_text("garbage")
    (tmp_path / "bad.key").chmod(0o600)
    assert export_main([str(ckpt), "--out", str(tmp_path / "bad"), "--sign", str(tmp_path / "bad.key")]) == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    key, trusted = make_key(tmp_path)
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(trusted))  # the trust policy of a robot that trusts this key
    rc = export_main([str(ckpt), "--out", str(tmp_path / "pkg"), "--parity-obs", "4", "--calibration-obs", "4",
                      "--no-progress", "--sign", str(key)])
    assert rc == 0, capsys.readouterr().err
    assert "signed with key" in capsys.readouterr().out
    r = verify_package(tmp_path / "pkg")
    assert r.ok and "a trusted key" in r.signature
