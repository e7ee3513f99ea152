"""imle-verify on an exported image package (#21): a tiny LIGHT-encoder Push-T policy, fp32 and int8,
passes every check (operators incl. Reciprocal, signature, golden vectors re-run), and a changed graph
input in its golden vectors is refused with one line."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from runtime.signing import ENV_TRUSTED_KEYS, generate_keypair, sign_package  # noqa: E402
from runtime.verify import main as verify_main, verify_package  # noqa: E402
from tiny_image_package import copy_package, tiny_image_package  # noqa: E402


@pytest.fixture(scope="module")
def image_package(tmp_path_factory) -> Path:
    return tiny_image_package(tmp_path_factory.mktemp("pkg"))


@pytest.fixture(autouse=True)
def _no_trusted_keys(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(tmp_path / "no-keys"))


def test_a_signed_light_encoder_image_package_verifies_with_its_golden_vectors(image_package, tmp_path, monkeypatch,
                                                                                capsys):
    import onnx
    pkg = copy_package(image_package, tmp_path / "signed")
    keys = tmp_path / "keys"
    generate_keypair(tmp_path / "release.key", keys / "release.pub")
    sign_package(pkg, tmp_path / "release.key")
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(keys))
    ops = {n.op_type for n in onnx.load(str(pkg / "generator.onnx")).graph.node}
    assert "Reciprocal" in ops  # what the image encoder exports to (and imle-verify now allows)
    m = json.loads((pkg / "manifest.json").read_text())
    assert m["obs"]["image_shape"] == [3, 96, 96]
    r = verify_package(pkg)
    assert r.ok, r.refusal
    assert "a trusted key" in r.signature
    golden = [ln for ln in r.lines if ln.startswith("golden generator")]
    assert [ln.split(":")[0] for ln in golden] == ["golden generator.onnx", "golden generator.int8.onnx"]
    assert all(" 2 cases, worst error " in ln for ln in golden)
    assert any("int8 generator" in ln and "quantised operators" in ln for ln in r.lines)
    assert verify_main([str(pkg), "-q"]) == 0
    assert f"imle-verify: verified {pkg} (" in capsys.readouterr().out


def test_a_changed_golden_image_is_refused_with_one_line(image_package, tmp_path, capsys):
    pkg = copy_package(image_package, tmp_path / "changed")
    m = json.loads((pkg / "manifest.json").read_text())
    case = next(c for c in m["golden"]["cases"] if c["file"] == "generator.onnx")
    img = case["inputs"]["obs_image"]
    pixels = np.frombuffer(base64.b64decode(img["data"]), np.uint8).copy()
    pixels[:] = 255 - pixels  # another picture: the recorded actions no longer follow
    img["data"] = base64.b64encode(pixels.tobytes()).decode()
    (pkg / "manifest.json").write_text(json.dumps(m, indent=2))
    r = verify_package(pkg, allow_unsigned=True)
    assert not r.ok and "\n" not in r.refusal
    assert r.refusal.startswith("golden generator.onnx: 2 cases, worst error ")
    assert r.refusal.endswith("does not reproduce the exporter's outputs on " + __import__("platform").machine())
    assert verify_main([str(pkg), "--allow-unsigned", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "REFUSED" in err
