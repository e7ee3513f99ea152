"""imle-verify: static graph checks (operators, precision labels, shapes, external data), golden vectors."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from flash_fixtures import fp32_graph, make_package, save_graph
from runtime.golden import TOLERANCE, decode_array, encode_array
from runtime.onnx_inspect import OnnxFormatError, inspect_model
from runtime.package import sha256_file
from runtime.signing import ENV_TRUSTED_KEYS
from runtime.verify import main as verify_main, verify_package

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "exported_models" / "pusht-state-imle"


@pytest.fixture(autouse=True)
def _no_trusted_keys(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(tmp_path / "no-keys"))


def _manifest(pkg: Path) -> dict:
    return json.loads((pkg / "manifest.json").read_text())


def _save_manifest(pkg: Path, m: dict) -> None:
    (pkg / "manifest.json").write_text(json.dumps(m, indent=2))


def _replace_graph(pkg: Path, name: str, build) -> None:
    build(pkg / name)
    m = _manifest(pkg)
    for f in m["files"]:
        if f["name"] == name:
            f["sha256"] = sha256_file(pkg / name)
    _save_manifest(pkg, m)


def refusal(pkg) -> str:
    r = verify_package(pkg)
    assert not r.ok and "\n" not in r.refusal
    return r.refusal


def test_shipped_package_verifies_with_the_shipped_key(monkeypatch):
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(REPO / "runtime" / "keys"))
    r = verify_package(SHIPPED)
    assert r.ok, r.refusal
    assert "a trusted key" in r.signature
    assert sum(ln.startswith("golden generator") for ln in r.lines) == 2
    m = _manifest(SHIPPED)
    assert m["evaluation"]["score"] > 0 and m["golden"]["checked_architectures"]


def test_fp32_copy_labelled_int8_is_refused(tmp_path):
    """The export that skipped quantisation: byte-identical fp32 graph under the int8 label."""
    pkg = make_package(tmp_path / "p")
    shutil.copy(pkg / "g.onnx", pkg / "g8.onnx")
    m = _manifest(pkg)
    m["files"][1]["sha256"] = sha256_file(pkg / "g8.onnx")
    _save_manifest(pkg, m)
    assert "labelled int8 but holds 0 quantised operators" in refusal(pkg)


def test_int8_graph_labelled_fp32_is_refused(tmp_path):
    pkg = make_package(tmp_path / "p")
    m = _manifest(pkg)
    m["files"][0], m["files"][1] = dict(m["files"][1], precision="fp32"), dict(m["files"][0], precision="int8")
    _save_manifest(pkg, m)
    assert "labelled" in refusal(pkg)


@pytest.mark.parametrize("node, domain, expect", [
    (helper.make_node("RandomNormalLike", ["z"], ["actions"]), "", "RandomNormalLike"),
    (helper.make_node("Evil", ["z"], ["actions"], domain="com.example"), "com.example", "com.example:Evil"),
])
def test_unsupported_operators_are_refused_before_any_session(tmp_path, node, domain, expect, monkeypatch):
    pkg = make_package(tmp_path / "p", int8=False)
    _replace_graph(pkg, "g.onnx", lambda p: save_graph([node], p, opset_domain=domain, check=False))
    import runtime.package as package

    def no_session(*a, **k):
        raise AssertionError("a session was opened for a refused graph")

    monkeypatch.setattr(package.Package, "session", no_session)
    assert f"operators not supported by the runtime: {expect}" in refusal(pkg)


def test_control_flow_subgraph_is_refused(tmp_path):
    pkg = make_package(tmp_path / "p", int8=False)
    body = helper.make_graph([helper.make_node("Identity", ["z"], ["o"])], "b", [],
                             [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["c"], ["actions"], then_branch=body, else_branch=body)
    _replace_graph(pkg, "g.onnx", lambda p: save_graph([node], p, [cond], check=False))
    assert "subgraph" in refusal(pkg)


def test_external_data_is_refused(tmp_path):
    pkg = make_package(tmp_path / "p", int8=False)

    def build(p):
        t = helper.make_tensor("gain", TensorProto.FLOAT, [], [1.0])
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", "../../etc/passwd"
        save_graph([helper.make_node("Mul", ["z", "gain"], ["actions"])], p, [t], check=False)

    _replace_graph(pkg, "g.onnx", build)
    r = refusal(pkg)
    assert "external" in r


def test_shape_that_contradicts_the_manifest_is_refused_statically(tmp_path):
    pkg = make_package(tmp_path / "p", int8=False)
    _replace_graph(pkg, "g.onnx", lambda p: save_graph(
        [helper.make_node("Identity", ["z"], ["actions"])], p, z_shape=("N", 9, 2), check=False))
    assert "input 'z' has shape" in refusal(pkg)


@pytest.mark.parametrize("cut", [1, 10, 100, -3])
def test_truncated_graphs_are_refused(tmp_path, cut):
    pkg = make_package(tmp_path / "p", int8=False)
    data = (pkg / "g.onnx").read_bytes()
    _replace_graph(pkg, "g.onnx", lambda p: p.write_bytes(data[:cut]))
    assert "g.onnx" in refusal(pkg)


def test_inspect_rejects_garbage_without_crashing():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 64, 4096):
        with pytest.raises(OnnxFormatError):
            inspect_model(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    with pytest.raises(OnnxFormatError, match="varint"):
        inspect_model(b"\x08" + b"\xff" * 11)


def test_golden_vectors_catch_a_changed_graph_and_tolerances_are_per_precision(tmp_path):
    pkg = make_package(tmp_path / "p")
    m = _manifest(pkg)
    for i, case in enumerate(m["golden"]["cases"]):
        ref = decode_array(case["outputs"]["actions"], "x")
        frac = TOLERANCE["int8" if case["file"] == "g8.onnx" else "fp32"]
        # just inside the tolerance: 0.9 x tolerance x action range (10)
        case["outputs"]["actions"] = encode_array(ref + np.float32(0.9 * frac * 10.0))
    _save_manifest(pkg, m)
    assert verify_package(pkg).ok
    for case in m["golden"]["cases"]:
        if case["file"] == "g8.onnx":  # int8's tolerance is looser, but 2x beyond it is caught
            case["outputs"]["actions"] = encode_array(decode_array(case["outputs"]["actions"], "x")
                                                      + np.float32(0.2 * TOLERANCE["int8"] * 10.0))
    _save_manifest(pkg, m)
    assert "golden g8.onnx" in refusal(pkg)


def test_golden_vectors_of_a_different_model_are_refused(tmp_path):
    pkg = make_package(tmp_path / "p", int8=False)
    _replace_graph(pkg, "g.onnx", lambda p: fp32_graph(p, gain=1.01))
    assert "does not reproduce" in refusal(pkg)


@pytest.mark.parametrize("edit, message", [
    (lambda g: g.pop("cases"), "golden.cases"),
    (lambda g: g.update(version=2), "golden.version"),
    (lambda g: g["cases"][0].update(file="../g.onnx"), "not a graph of this package"),
    (lambda g: g["cases"][0]["inputs"]["z"].update(shape=[4, 5, 2]), "needs"),
    (lambda g: g["cases"][0]["inputs"]["z"].update(data="!!"), "not valid base64"),
    (lambda g: g["cases"][0]["inputs"]["z"].update(dtype="float64"), "expected float32 or uint8"),
    (lambda g: g["cases"][0]["inputs"]["z"].update(shape=[1 << 20, 1 << 20]), "elements"),
    (lambda g: g["cases"][0]["inputs"].pop("obs_state"), "names"),
    (lambda g: g["cases"][0]["inputs"].update(
        z={"dtype": "float32", "shape": [4, 9, 2], "data": base64.b64encode(bytes(288)).decode()}), "manifest implies"),
    (lambda g: g["cases"][0]["outputs"].update(
        actions={"dtype": "float32", "shape": [1], "data": base64.b64encode(np.float32([np.nan]).tobytes()).decode()}),
     "NaN"),
    (lambda g: g.update(cases=[c for c in g["cases"] if c["file"] != "g8.onnx"]), "no case for g8.onnx"),
])
def test_malformed_golden_sections_are_refused_with_one_line(tmp_path, edit, message):
    pkg = make_package(tmp_path / "p")
    m = _manifest(pkg)
    edit(m["golden"])
    _save_manifest(pkg, m)
    assert message in refusal(pkg)


def test_missing_golden_vectors_are_refused(tmp_path):
    pkg = make_package(tmp_path / "p", golden=False)
    assert "no golden vectors" in refusal(pkg)


def test_cli_exit_codes_and_one_line(tmp_path, capsys):
    pkg = make_package(tmp_path / "p")
    assert verify_main([str(pkg)]) == 0
    assert "imle-verify: verified" in capsys.readouterr().out
    (pkg / "g.onnx").write_bytes(b"x")
    assert verify_main([str(pkg), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("imle-verify: REFUSED") and err.count("\n") == 1 and "Traceback" not in err
    assert verify_main([str(tmp_path / "missing")]) == 1
