"""Tiny packages for the signing / verify / flash tests: hand-built graphs (fp32: actions = z * gain;
int8: the same through QuantizeLinear/DequantizeLinear) with golden vectors, optionally signed."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from runtime.golden import add_golden
from runtime.package import (ActionSpec, ControlSpec, FileEntry, Horizons, Manifest, MinMaxStats, Normalization,
                             ObsSpec, sha256_file)
from runtime.signing import generate_keypair, sign_package

TO, TP, DS, A = 2, 4, 3, 2


def save_graph(nodes, path: Path, inits=(), opset_domain: str = "", z_shape=("N", TP, A), check: bool = True) -> None:
    inputs = [helper.make_tensor_value_info("obs_state", TensorProto.FLOAT, [1, TO, DS]),
              helper.make_tensor_value_info("z", TensorProto.FLOAT, list(z_shape))]
    out = helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", TP, A])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(opset_domain, 1)] if opset_domain else [])
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [out], list(inits)), opset_imports=opsets)
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))


def fp32_graph(path: Path, gain: float = 1.0) -> None:
    save_graph([helper.make_node("Mul", ["z", "gain"], ["actions"])], path,
               [helper.make_tensor("gain", TensorProto.FLOAT, [], [gain])])


def int8_graph(path: Path, gain: float = 1.0) -> None:
    nodes = [helper.make_node("Mul", ["z", "gain"], ["y"]),
             helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["actions"])]
    save_graph(nodes, path, [helper.make_tensor("gain", TensorProto.FLOAT, [], [gain]),
                             helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]),
                             helper.make_tensor("zp", TensorProto.UINT8, [], [128])])


def write_manifest(root: Path, files: list[FileEntry], name: str = "tiny", golden: bool = True) -> Path:
    m = Manifest(name=name, method="rs_imle", task="test",
                 obs=ObsSpec(state_dim=DS, state_names=[f"s{i}" for i in range(DS)]),
                 action=ActionSpec(dim=A, names=["a0", "a1"], low=[-5.0, -5.0], high=[5.0, 5.0]),
                 horizons=Horizons(obs=TO, pred=TP, action=2), control=ControlSpec(period_s=0.1, candidates=4),
                 latent_shape=[TP, A],
                 normalization=Normalization(state=MinMaxStats([0.0] * DS, [1.0] * DS),
                                             action=MinMaxStats([-5.0, -5.0], [5.0, 5.0])),
                 files=files)
    (root / "manifest.json").write_text(json.dumps(m.to_dict(), indent=2))
    if golden:
        add_golden(root)
    return root


def make_package(root: Path, gain: float = 1.0, name: str = "tiny", int8: bool = True, key: Path | None = None,
                 golden: bool = True) -> Path:
    """A complete package (fp32 + int8 graphs, golden vectors), signed with ``key`` when given."""
    root.mkdir(parents=True, exist_ok=True)
    fp32_graph(root / "g.onnx", gain)
    files = [FileEntry("g.onnx", sha256_file(root / "g.onnx"), "fp32")]
    if int8:
        int8_graph(root / "g8.onnx", gain)
        files.append(FileEntry("g8.onnx", sha256_file(root / "g8.onnx"), "int8"))
    write_manifest(root, files, name, golden)
    if key is not None:
        sign_package(root, key)
    return root


def make_key(dirpath: Path, name: str = "release") -> tuple[Path, Path]:
    """(private key, trusted-keys directory holding its public half)."""
    trusted = dirpath / f"trusted-{name}"
    trusted.mkdir(parents=True, exist_ok=True)
    key = dirpath / f"{name}.key"
    generate_keypair(key, trusted / f"{name}.pub")
    return key, trusted
