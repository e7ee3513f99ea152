"""Hostile and broken model packages: every one is refused at load with one line naming the field.

Small packages come from tests/test_runtime_policy.py's builders (a generator graph ``actions = z``);
a few cases tamper with a copy of the shipped package. Each refusal is checked for its field, its
values, and for being one short line (a traceback or a multi-line dump shown to a user is a bug).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime import PackageError, Policy, load_package
from runtime import package as P
from runtime.package import FileEntry, external_data_files, sha256_file
from test_runtime_policy import A, DS, OBS, TO, TP, baseline_package, imle_package, manifest_for, write_package

SHIPPED = Path(__file__).resolve().parents[1] / "exported_models" / "pusht-state-imle"


def refused(fn, pattern: str) -> str:
    """Run ``fn``; it must raise one PackageError whose single-line message matches ``pattern``."""
    with pytest.raises(PackageError, match=pattern) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


def edit(pkg: Path, fn) -> Path:
    raw = json.loads((pkg / "manifest.json").read_text())
    fn(raw)
    (pkg / "manifest.json").write_text(json.dumps(raw))
    return pkg


def set_path(raw: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for k in parents:
        raw = raw[k]
    raw[last] = value


def rehash(pkg: Path) -> None:
    """What an attacker does after swapping a file: rewrite the manifest's hashes to match."""
    edit(pkg, lambda m: [f.update(sha256=sha256_file(pkg / f["name"])) for f in m["files"]])


# ---------------------------------------------------------------------------- the shipped package
def test_shipped_package_loads_and_plans():
    pol = Policy(SHIPPED, precision="fp32", candidates=4)
    assert pol.act(np.full((2, 5), 200.0, np.float32)).shape == (8, 2)


@pytest.fixture
def shipped_copy(tmp_path) -> Path:
    """An unsigned copy: the signature (runtime.signing, tested there) would refuse any edit first,
    and these tests check what the manifest's own checks refuse."""
    dst = tmp_path / "pkg"
    shutil.copytree(SHIPPED, dst)
    (dst / P.SIGNATURE).unlink(missing_ok=True)
    return dst


@pytest.mark.parametrize("value, pattern", [
    (float("nan"), r"'action\.low\[1\]' is nan; must be finite"),
    (float("-inf"), r"'action\.low\[1\]' is -inf; must be finite"),
    (600.0, r"'action\.low\[1\]' \(600\.0\) must be below action\.high\[1\] \(511\.0\)"),
    (511.0, r"below action\.high\[1\]"),  # an empty box is refused too
])
def test_shipped_copy_with_bad_action_limits_is_refused(shipped_copy, value, pattern):
    edit(shipped_copy, lambda m: m["action"]["low"].__setitem__(1, value))  # json writes NaN / -Infinity
    refused(lambda: load_package(shipped_copy), pattern)


def test_shipped_copy_with_a_swapped_graph_and_stale_hash_is_refused(shipped_copy):
    shutil.copy(shipped_copy / "generator.int8.onnx", shipped_copy / "generator.onnx")
    refused(lambda: load_package(shipped_copy), r"files\[0\]\.sha256.*generator\.onnx does not match")


# ---------------------------------------------------------------------------- manifest values out of bounds
BOUNDS = [
    ("control.candidates", 1_000_000, r"'control\.candidates' is 1000000; must be in 1\.\.4096"),
    ("control.candidates", 0, r"'control\.candidates' is 0; must be in 1\.\.4096"),
    ("control.candidates", 4096, None),  # the bound itself loads
    ("control.period_s", 1e6, r"'control\.period_s' is 1000000\.0; must be a finite number in \[0\.001, 10\.0\]"),
    ("control.period_s", 0.0, r"'control\.period_s' is 0\.0"),
    ("control.period_s", -0.1, r"'control\.period_s' is -0\.1"),
    ("control.period_s", 1e-6, r"'control\.period_s' is 1e-06"),
    ("control.period_s", float("inf"), r"'control\.period_s' is inf; must be finite"),
    ("control.period_s", float("nan"), r"'control\.period_s' is nan; must be finite"),
    ("control.tc_reset_after", -1, r"'control\.tc_reset_after' is -1; must be in 0\.\.1000000"),
    ("control.tc_reset_after", 10**7, r"'control\.tc_reset_after' is 10000000"),
    ("horizons.obs", 0, r"'horizons\.obs' is 0; must be in 1\.\.1024"),
    ("horizons.pred", 10**6, r"'horizons\.pred' is 1000000; must be in 1\.\.1024"),
    ("horizons.action", 0, r"'horizons\.action' is 0; must be in 1\.\.pred - obs \+ 1 = 7"),
    ("horizons.action", TP - TO + 2, r"'horizons\.action' is 8; must be in 1\.\.pred - obs \+ 1 = 7 \(pred 8, obs 2\)"),
    ("latent_shape", [TP, A + 1], r"'latent_shape' is \[8, 3\], expected \[horizons\.pred, action\.dim\] = \[8, 2\]"),
    ("latent_shape", [TP * A], r"'latent_shape' is \[16\]"),
    ("obs.state_dim", 0, r"'obs\.state_dim' is 0; must be in 1\.\.1024"),
    ("obs.state_dim", 10**9, r"'obs\.state_dim' is 1000000000"),
    ("obs.state_names", ["a", "b"], r"'obs\.state_names' has 2 names for state_dim 3"),
    ("obs.state_names", ["a", "", "c"], r"'obs\.state_names\[1\]' must have 1\.\.256 characters"),
    ("obs.image_shape", [3, 0, 96],
     r"'obs\.image_shape' must be \[3, H, W\] with H and W in 1\.\.4096, got \[3, 0, 96\]"),
    ("obs.image_shape", [3, 10**6, 96], r"'obs\.image_shape'.*got \[3, 1000000, 96\]"),
    ("action.dim", 0, r"'action\.dim' is 0; must be in 1\.\.1024"),
    ("action.dim", 10**6, r"'action\.dim' is 1000000"),
    ("action.names", ["x"], r"'action\.names' has 1 names for action\.dim 2"),
    ("action.high", [100.0, float("inf")], r"'action\.high\[1\]' is inf; must be finite"),
    ("action.high", [100.0], r"'action\.high' has 1 entries for action\.dim 2"),
    ("action.low", [0.0, 1e9], r"'action\.low\[1\]' \(1000000000\.0\) must be below action\.high\[1\] \(10\.0\)"),
    ("normalization.state.min", [0.0, float("nan"), 0.0], r"'normalization\.state\.min\[1\]' is nan; must be finite"),
    ("normalization.action.max", [100.0, -20.0],
     r"'normalization\.action\.min\[1\]' \(-10\.0\) is above max\[1\] \(-20\.0\)"),
    ("normalization.action.max", [100.0], r"'normalization\.action' must have 2 min and max values"),
]


@pytest.mark.parametrize("field, value, pattern", BOUNDS, ids=[f"{f}={v}" for f, v, _ in BOUNDS])
def test_manifest_bounds(tmp_path, field, value, pattern):
    pkg = edit(imle_package(tmp_path / "p"), lambda m: set_path(m, field, value))
    if pattern is None:
        load_package(pkg)
    else:
        refused(lambda: load_package(pkg), pattern)


def test_plan_size_is_bounded_across_candidates_horizon_and_dim(tmp_path):
    pkg = edit(imle_package(tmp_path / "p"), lambda m: (set_path(m, "horizons.pred", 1024),
                                                        set_path(m, "action.dim", 1024),
                                                        set_path(m, "control.candidates", 8)))
    refused(lambda: manifest_from(pkg), r"'control\.candidates' is 8: 8 x pred 1024 x action\.dim 1024 = 8388608 "
                                        r"values per plan, above 4194304")


def manifest_from(pkg: Path):
    """validate() on a manifest whose per-dimension lists were grown to match the edited dims."""
    raw = json.loads((pkg / "manifest.json").read_text())
    a, p = raw["action"]["dim"], raw["horizons"]["pred"]
    raw["action"].update(names=[f"a{i}" for i in range(a)], low=[0.0] * a, high=[1.0] * a)
    raw["normalization"]["action"] = {"min": [0.0] * a, "max": [1.0] * a}
    raw["latent_shape"] = [p, a]
    return P.Manifest.from_dict(raw)


@pytest.mark.parametrize("kind, field, value, pattern", [
    ("ddim", "sampler.steps", 10**6, r"'sampler\.steps' is 1000000; must be in 1\.\.100"),
    ("ddim", "sampler.steps", 0, r"'sampler\.steps' is 0"),
    ("ddim", "sampler.train_steps", 10**6, r"'sampler\.train_steps' is 1000000; must be in 1\.\.1000"),
    ("euler", "sampler.steps", 5000, r"'sampler\.steps' is 5000; must be in 1\.\.1000"),
    ("euler", "cond_dim", 10**9, r"'cond_dim' is 1000000000; must be in 1\.\.65536"),
    ("euler", "cond_dim", 0, r"'cond_dim' is 0"),
])
def test_baseline_sampler_bounds(tmp_path, kind, field, value, pattern):
    pkg = edit(baseline_package(tmp_path / "b", kind=kind, steps=2), lambda m: set_path(m, field, value))
    refused(lambda: load_package(pkg), pattern)


@pytest.mark.parametrize("field, value, pattern", [
    ("control.candidates", "32", r"'control\.candidates' must be an integer, got '32'"),
    ("control.candidates", True, r"'control\.candidates' must be an integer, got True"),
    ("control.candidates", 32.5, r"'control\.candidates' must be an integer, got 32\.5"),
    ("control.period_s", "0.1", r"'control\.period_s' must be a number, got '0\.1'"),
    ("control.period_s", 10**400, r"'control\.period_s' is out of float range"),
    ("control", [], r"'control' must be an object"),
    ("files", {}, r"'files' must be a list"),
    ("name", "x" * 10_000, None),  # a long name is harmless; the manifest size bound applies
    ("action.names", [1, 2], r"'action\.names\[0\]' must be a str, got 1"),
    ("training.command", ["x" * 500], r"'training\.command' must be a str, got \['xxxx"),
])
def test_wrong_types_are_one_line(tmp_path, field, value, pattern):
    pkg = edit(imle_package(tmp_path / "p"), lambda m: set_path(m, field, value))
    if pattern is None:
        load_package(pkg)
    else:
        msg = refused(lambda: load_package(pkg), pattern)
        assert len(msg) < 200  # a long value is cut, not echoed


@pytest.mark.parametrize("text, pattern", [
    ("[]", r"manifest: expected a JSON object"),
    ('"manifest"', r"manifest: expected a JSON object"),
    ("null", r"manifest: expected a JSON object"),
    ("", r"not valid JSON \(Expecting value at line 1 column 1\)"),
    ("\n{", r"not valid JSON"),
    ('{"format": ' + "9" * 5000 + "}", r"not valid JSON \(Exceeds the limit \(4300 digits\)"),
    ('{"format": "a", "format": "imle-policy-package"}', r"manifest: key 'format' appears twice"),
])
def test_manifest_that_is_not_an_object_or_not_json(tmp_path, text, pattern):
    pkg = imle_package(tmp_path / "p")
    (pkg / "manifest.json").write_text(text)
    refused(lambda: load_package(pkg), pattern)


def test_truncated_and_non_utf8_manifest(tmp_path):
    pkg = imle_package(tmp_path / "p")
    data = (pkg / "manifest.json").read_bytes()
    for cut in (1, len(data) // 3, len(data) - 2):
        (pkg / "manifest.json").write_bytes(data[:cut])
        refused(lambda: load_package(pkg), r"manifest\.json: not valid JSON")
    (pkg / "manifest.json").write_bytes(data[:10] + b"\xff\xfe" + data[10:])
    refused(lambda: load_package(pkg), r"not valid JSON \(not UTF-8 at byte 10\)")


def test_manifest_nested_200k_deep_is_one_line_not_a_recursion_error(tmp_path):
    pkg = imle_package(tmp_path / "p")
    (pkg / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    refused(lambda: load_package(pkg), r"JSON nesting depth is 200000; at most 32")


def test_nesting_inside_a_free_form_field_and_brackets_inside_strings(tmp_path):
    pkg = imle_package(tmp_path / "p")
    nested: object = 1
    for _ in range(40):
        nested = {"a": nested}
    edit(pkg, lambda m: m["training"].update(config=nested))
    refused(lambda: load_package(pkg), r"JSON nesting depth is 42; at most 32")
    # brackets and escaped quotes inside strings do not count
    edit(pkg, lambda m: m["training"].update(config={"x": "[[[[{{{{\\\"[[[[" * 100}, command="]]]]"))
    load_package(pkg)


def test_oversized_manifest_is_refused_before_parsing(tmp_path):
    pkg = imle_package(tmp_path / "p")
    edit(pkg, lambda m: m["training"].update(command="x" * (1 << 20)))
    refused(lambda: load_package(pkg), r"manifest: manifest\.json has \d+ bytes; at most 1048576 are allowed")


# ---------------------------------------------------------------------------- files
@pytest.mark.parametrize("name", ["../g.onnx", "/etc/passwd", "sub/g.onnx", "sub\\g.onnx", "..", ".", "",
                                  ".hidden", "g..onnx", "manifest.json", "g.onnx\x00", "x" * 200])
def test_file_names_must_be_plain_names_inside_the_package(tmp_path, name):
    pkg = edit(imle_package(tmp_path / "p"), lambda m: m["files"][0].update(name=name))
    refused(lambda: load_package(pkg), r"'files\[0\]\.name' .* must be a plain file name inside the package")


@pytest.mark.parametrize("sha, pattern", [("A" * 64, "lower-case sha256"), ("z" * 64, "lower-case sha256"),
                                          ("0" * 63, "lower-case sha256")])
def test_malformed_hashes(tmp_path, sha, pattern):
    pkg = edit(imle_package(tmp_path / "p"), lambda m: m["files"][0].update(sha256=sha))
    refused(lambda: load_package(pkg), rf"'files\[0\]\.sha256' is not a {pattern}")


def test_duplicate_and_too_many_file_entries(tmp_path):
    pkg = edit(imle_package(tmp_path / "p"), lambda m: m["files"].append(dict(m["files"][0], precision="int8")))
    refused(lambda: load_package(pkg), r"'files\[1\]\.name' 'g\.onnx' is listed twice")
    pkg = edit(imle_package(tmp_path / "q"), lambda m: m["files"].extend(
        dict(m["files"][0], name=f"g{i}.onnx") for i in range(20)))
    refused(lambda: load_package(pkg), r"'files' has 21 entries; at most 16")


def test_symlinked_graph_is_refused_even_with_the_right_hash(tmp_path):
    pkg = imle_package(tmp_path / "p")
    real = tmp_path / "outside.onnx"
    os.replace(pkg / "g.onnx", real)
    os.symlink(real, pkg / "g.onnx")
    refused(lambda: load_package(pkg), r"'g\.onnx' is a symbolic link; a package holds only regular files")


def test_symlinked_manifest_and_stray_symlink_are_refused(tmp_path):
    pkg = imle_package(tmp_path / "p")
    os.replace(pkg / "manifest.json", tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", pkg / "manifest.json")
    refused(lambda: load_package(pkg), r"manifest\.json is a symbolic link")
    pkg = imle_package(tmp_path / "q")
    os.symlink("/etc/passwd", pkg / "extra")
    refused(lambda: load_package(pkg), r"'extra' is a symbolic link")


def test_unlisted_files_and_directories_are_refused(tmp_path):
    pkg = imle_package(tmp_path / "p")
    (pkg / "weights.bin").write_bytes(b"\0" * 16)
    refused(lambda: load_package(pkg), r"package p: 'weights\.bin' is not listed in the manifest")
    pkg = imle_package(tmp_path / "q")
    (pkg / "sub").mkdir()
    refused(lambda: load_package(pkg), r"'sub' is not listed")


def test_a_directory_or_fifo_in_place_of_a_graph(tmp_path):
    pkg = imle_package(tmp_path / "p")
    (pkg / "g.onnx").unlink()
    (pkg / "g.onnx").mkdir()
    refused(lambda: load_package(pkg), r"files\[0\]'?: g\.onnx is not a regular file")
    pkg = imle_package(tmp_path / "q")
    (pkg / "g.onnx").unlink()
    os.mkfifo(pkg / "g.onnx")  # opening it would block: it is refused before
    refused(lambda: load_package(pkg), r"g\.onnx is not a regular file")


def test_missing_graph(tmp_path):
    pkg = imle_package(tmp_path / "p")
    (pkg / "g.onnx").unlink()
    refused(lambda: load_package(pkg), r"files\[0\]'?: g\.onnx is not in the package")


def test_oversized_graph_is_refused_without_reading_it(tmp_path):
    pkg = imle_package(tmp_path / "p")
    with open(pkg / "g.onnx", "r+b") as fh:
        fh.truncate(P.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    refused(lambda: load_package(pkg), rf"g\.onnx has {P.MAX_FILE_BYTES + 1} bytes; at most {P.MAX_FILE_BYTES}")


def test_a_graph_swapped_after_load_is_caught_when_the_session_is_made(tmp_path):
    """The session is made from bytes hashed at that moment, so there is no check-then-load window."""
    pkg_dir = imle_package(tmp_path / "p")
    pkg = load_package(pkg_dir)
    from test_runtime_policy import generator_graph

    generator_graph(pkg_dir / "g.onnx", nan_when_first_negative=True)  # a different, valid graph
    refused(lambda: Policy(pkg), r"files\[0\]\.sha256'?: g\.onnx does not match its hash")


# ---------------------------------------------------------------------------- ONNX external data
def external_generator(root: Path, location: str = "w.bin", offset: float = 0.5) -> Path:
    """``actions = z + W`` with W (all ``offset``) stored in an external-data file."""
    root.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.full((TP, A), offset, np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Add", ["z", "W"], ["actions"])], "gen",
        [helper.make_tensor_value_info("obs_state", TensorProto.FLOAT, [1, TO, DS]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", TP, A])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", TP, A])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(root / "g.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return root


def test_external_data_is_found_in_the_graph(tmp_path):
    pkg = external_generator(tmp_path / "p")
    assert external_data_files((pkg / "g.onnx").read_bytes()) == ["w.bin"]
    assert external_data_files(imle_package(tmp_path / "q").joinpath("g.onnx").read_bytes()) == []


def test_unlisted_external_data_is_refused(tmp_path):
    pkg = external_generator(tmp_path / "p")
    write_package(pkg, manifest_for([FileEntry("g.onnx", sha256_file(pkg / "g.onnx"), "fp32")]))
    refused(lambda: load_package(pkg), r"'w\.bin' is not listed in the manifest")
    (pkg / "w.bin").unlink()  # not in the directory either: the graph names it
    refused(lambda: Policy(pkg), r"g\.onnx: the graph keeps tensors in external file 'w\.bin', which the manifest "
                                 r"does not list as a file with role 'external_data'")


def listed_external(pkg: Path) -> Path:
    files = [FileEntry("g.onnx", sha256_file(pkg / "g.onnx"), "fp32"),
             FileEntry("w.bin", sha256_file(pkg / "w.bin"), "fp32", role="external_data")]
    return write_package(pkg, manifest_for(files))


def test_listed_external_data_is_hashed_and_supplied_from_memory(tmp_path):
    pkg = listed_external(external_generator(tmp_path / "p"))
    pol = Policy(load_package(pkg, verify_graphs=True), candidates=3)
    chunk = pol.plan(OBS)
    z = np.random.default_rng(0).standard_normal((3, TP, A), dtype=np.float32)
    np.testing.assert_allclose(chunk, z[0] + 0.5, rtol=1e-6)  # W came from the external file


def test_tampered_external_data_is_refused(tmp_path):
    pkg = listed_external(external_generator(tmp_path / "p"))
    pkg_loaded = load_package(pkg)
    np.full((TP, A), 1e9, np.float32).tofile(pkg / "w.bin")  # same size, other weights
    refused(lambda: Policy(pkg_loaded), r"'files\[1\]\.sha256': w\.bin does not match its hash")
    refused(lambda: load_package(pkg), r"'files\[1\]\.sha256': w\.bin does not match its hash")


def test_external_data_outside_the_package_is_refused(tmp_path):
    pkg = external_generator(tmp_path / "p")
    model = onnx.load(str(pkg / "g.onnx"), load_external_data=False)
    entry = next(e for e in model.graph.initializer[0].external_data if e.key == "location")
    entry.value = "../w.bin"  # onnx itself refuses to write this; a hostile exporter need not
    (pkg / "g.onnx").write_bytes(model.SerializeToString())
    os.replace(pkg / "w.bin", tmp_path / "w.bin")
    write_package(pkg, manifest_for([FileEntry("g.onnx", sha256_file(pkg / "g.onnx"), "fp32")]))
    refused(lambda: Policy(pkg), r"external file '\.\./w\.bin', which the manifest does not list")


def test_external_data_named_in_the_working_directory_is_never_read(tmp_path, monkeypatch):
    """Loading from bytes must not fall back to files relative to the current directory."""
    pkg = external_generator(tmp_path / "p")
    shutil.move(str(pkg / "w.bin"), tmp_path / "w.bin")
    write_package(pkg, manifest_for([FileEntry("g.onnx", sha256_file(pkg / "g.onnx"), "fp32")]))
    monkeypatch.chdir(tmp_path)
    refused(lambda: Policy(pkg), r"external file 'w\.bin', which the manifest does not list")


# ---------------------------------------------------------------------------- graphs onnxruntime refuses
def graph_file(root: Path, nodes, inits=(), out_shape=("N", TP, A), opset=(("", 17),)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(list(nodes), "gen",
                              [helper.make_tensor_value_info("obs_state", TensorProto.FLOAT, [1, TO, DS]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", TP, A])],
                              [helper.make_tensor_value_info("actions", TensorProto.FLOAT, list(out_shape))],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opset])
    model.ir_version = 8
    onnx.save(model, str(root / "g.onnx"))
    return write_package(root, manifest_for([FileEntry("g.onnx", sha256_file(root / "g.onnx"), "fp32")]))


def test_garbage_and_truncated_graphs_with_matching_hashes(tmp_path):
    pkg = imle_package(tmp_path / "p")
    (pkg / "g.onnx").write_bytes(os.urandom(4096))
    rehash(pkg)
    refused(lambda: Policy(pkg), r"g\.onnx: (not a valid ONNX model|onnxruntime cannot load this graph)")
    pkg = imle_package(tmp_path / "q")
    data = (pkg / "g.onnx").read_bytes()
    (pkg / "g.onnx").write_bytes(data[: len(data) // 2])
    rehash(pkg)
    refused(lambda: Policy(pkg), r"g\.onnx: not a valid ONNX model \(truncated\)")
    (pkg / "g.onnx").write_bytes(b"")
    rehash(pkg)
    refused(lambda: Policy(pkg), r"g\.onnx: onnxruntime cannot load this graph \(\w+: ")


def test_unsupported_op_is_one_line(tmp_path):
    pkg = graph_file(tmp_path / "p", [helper.make_node("Exfiltrate", ["z"], ["actions"], domain="com.evil")],
                     opset=(("", 17), ("com.evil", 1)))
    refused(lambda: Policy(pkg), r"g\.onnx: onnxruntime cannot load this graph \(\w+: .*Exfiltrate")


def data_dependent(values: list[int], name: str) -> list:
    """Nodes computing int64 ``values`` from obs_state * 0, so that shape inference cannot know them."""
    consts = [numpy_helper.from_array(np.zeros((), np.float32), f"{name}_zero"),
              numpy_helper.from_array(np.array([1], np.int64), f"{name}_one"),
              numpy_helper.from_array(np.array(values, np.float32), f"{name}_v")]
    nodes = [helper.make_node("Mul", ["obs_state", f"{name}_zero"], [f"{name}_m"]),
             helper.make_node("ReduceSum", [f"{name}_m"], [f"{name}_s"], keepdims=0),
             helper.make_node("Add", [f"{name}_s", f"{name}_v"], [f"{name}_f"]),
             helper.make_node("Cast", [f"{name}_f"], [name], to=TensorProto.INT64)]
    return nodes, consts


def test_declared_output_shape_that_contradicts_the_manifest(tmp_path):
    starts, ends, axes = (numpy_helper.from_array(np.array([v], np.int64), n)
                          for v, n in ((1, "s"), (TP, "e"), (1, "ax")))
    pkg = graph_file(tmp_path / "p", [helper.make_node("Slice", ["z", "s", "e", "ax"], ["actions"])],
                     [starts, ends, axes])
    refused(lambda: Policy(pkg), r"g\.onnx: output 'actions' has shape \['N', 7, 2\], the manifest implies "
                                 r"\['N', 8, 2\]")


def test_graph_whose_output_contradicts_its_declared_shape(tmp_path):
    """Declared [N, Tp, A], computes [N, Tp - 1, A] (data-dependent, so onnxruntime cannot see it at
    load): refused by the load-time probe, not mid-run."""
    nodes, consts = data_dependent([TP - 1], "e")
    starts, axes = (numpy_helper.from_array(np.array([v], np.int64), n) for v, n in ((0, "s"), (1, "ax")))
    pkg = graph_file(tmp_path / "p", nodes + [helper.make_node("Slice", ["z", "s", "e", "ax"], ["actions"])],
                     consts + [starts, axes])
    refused(lambda: Policy(pkg, candidates=3), r"g\.onnx: output 'actions' is float32 \[3, 7, 2\], the manifest "
                                               r"implies float32 \[3, 8, 2\]")


def test_graph_that_fails_at_run_time_for_the_candidate_count(tmp_path):
    """A graph that only works for 16 candidates (a Reshape to a computed shape): one line at load for
    any other count."""
    nodes, consts = data_dependent([16, TP, A], "shape")
    pkg = graph_file(tmp_path / "p", nodes + [helper.make_node("Reshape", ["z", "shape"], ["actions"])], consts)
    assert Policy(pkg, candidates=16).plan(OBS).shape == (TP, A)
    refused(lambda: Policy(pkg, candidates=5), r"g\.onnx: onnxruntime failed to run the graph \(\w+: ")


# ---------------------------------------------------------------------------- overrides given to Policy
@pytest.mark.parametrize("candidates, pattern", [
    (1_000_000, r"^candidates is 1000000; must be in 1\.\.4096$"),
    (0, r"^candidates is 0; must be in 1\.\.4096$"),
    (-3, r"^candidates is -3"),
    (True, r"^candidates must be an integer, got True$"),
    (2.5, r"^candidates must be an integer, got 2\.5$"),
    ("8", r"^candidates must be an integer, got '8'$"),
])
def test_candidate_override_is_bounded(tmp_path, candidates, pattern):
    pkg = imle_package(tmp_path / "p")
    refused(lambda: Policy(pkg, candidates=candidates), pattern)


def test_candidate_override_accepts_integral_values(tmp_path):
    pkg = imle_package(tmp_path / "p")
    assert Policy(pkg, candidates=np.int64(4)).candidates == 4
    assert Policy(pkg, candidates=4096).candidates == 4096


def test_tc_reset_after_override_is_bounded(tmp_path):
    with pytest.raises(ValueError, match=r"tc_reset_after must be >= 0 \(0: never\) and at most 1000000, got 10000000"):
        Policy(imle_package(tmp_path / "p"), tc_reset_after=10**7)
