"""imle-hil record/check on a non-Push-T package (two joints, the emulator's generic joint plant, in
lock-step over a pty): a replay matches exactly, a changed trace gives its first divergence, and every
hostile trace file is a one-line refusal."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.hil_cli import main
from runtime.hil_compare import compare, compare_mode
from runtime.hil_run import RunSettings, record_run
from runtime.hil_trace import Trace, TraceError, load_trace, save_trace
from runtime.package import (ActionSpec, ControlSpec, FileEntry, Horizons, Manifest, MinMaxStats, Normalization,
                             ObsSpec, sha256_file)

TO, TP, TA, A = 2, 8, 4, 2


def _generator(path: Path, gain: float) -> None:
    """actions = gain * z + the latest observation (the plan depends on what the device reports)."""
    inputs = [helper.make_tensor_value_info("obs_state", TensorProto.FLOAT, [1, TO, A]),
              helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", TP, A])]
    out = helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", TP, A])
    nodes = [helper.make_node("Slice", ["obs_state", "s0", "s1", "ax"], ["last"]),
             helper.make_node("Mul", ["z", "gain"], ["zs"]),
             helper.make_node("Add", ["zs", "last"], ["actions"])]
    inits = [helper.make_tensor("s0", TensorProto.INT64, [1], [TO - 1]),
             helper.make_tensor("s1", TensorProto.INT64, [1], [TO]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
             helper.make_tensor("gain", TensorProto.FLOAT, [], [gain])]
    model = helper.make_model(helper.make_graph(nodes, "gen", inputs, [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def joints_package(root: Path, gain: float = 0.05, name: str = "joints2") -> Path:
    root.mkdir(parents=True)
    _generator(root / "g.onnx", gain)
    _generator(root / "g8.onnx", gain)  # the same graph labelled int8: the trace records the precision used
    files = [FileEntry("g.onnx", sha256_file(root / "g.onnx"), "fp32"),
             FileEntry("g8.onnx", sha256_file(root / "g8.onnx"), "int8")]
    joints = ["j0", "j1"]
    m = Manifest(name=name, method="rs_imle", task="two-joints", obs=ObsSpec(state_dim=A, state_names=joints),
                 action=ActionSpec(dim=A, names=joints, low=[-1.0, -1.0], high=[1.0, 1.0]),
                 horizons=Horizons(obs=TO, pred=TP, action=TA), control=ControlSpec(period_s=0.05, candidates=6),
                 latent_shape=[TP, A],
                 normalization=Normalization(state=MinMaxStats([-1.0] * A, [1.0] * A),
                                             action=MinMaxStats([-1.0] * A, [1.0] * A)), files=files)
    (root / "manifest.json").write_text(json.dumps(m.to_dict(), indent=2))
    return root


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("hil")
    pkg = joints_package(d / "pkg")
    path = d / "traces" / "joints2.fp32.npz"
    assert main(["record", str(pkg), "--robot", "emulator-lockstep", "--out", str(path), "--precision", "fp32",
                 "--episodes", "2", "--max-steps", "12"]) == 0
    return pkg, path


def _raw_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _write_raw(path: Path, arrays: dict) -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _set_meta(arrays: dict, **changes) -> dict:
    meta = json.loads(arrays["meta"].tobytes())
    meta.update(changes)
    return {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}


def _one_line_error(capsys, *parts: str) -> str:
    out = capsys.readouterr()
    err = out.err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith("imle-hil: error:"), err
    for p in parts:
        assert p in err, err
    return err


# ---------------------------------------------------------------------------- the round trip
def test_recorded_trace_holds_every_step_and_plan(recorded):
    pkg, path = recorded
    t = load_trace(path)
    assert t.meta["package"] == "joints2" and t.meta["precision"] == "fp32"
    assert t.rows == 24 and [e["steps"] for e in t.meta["episodes"]] == [12, 12]
    assert list(t.steps["episode"]) == [0] * 12 + [1] * 12 and list(t.steps["step"][:3]) == [0, 1, 2]
    assert list(t.plans["row"]) == [0, 4, 8, 12, 16, 20]  # a plan every Ta steps, made at that step's row
    assert t.steps["has_command"].all() and t.meta["names"]["joints"] == ["j0", "j1"]
    # what was planned is what was asked for: the executed rows of the selected chunk
    chunk = t.plans["chunk"][1]
    np.testing.assert_array_equal(t.steps["action"][4:8], chunk[TO - 1:TO - 1 + TA])
    # the plan's observation is the device state the loop saw (history of To states)
    np.testing.assert_array_equal(t.plans["obs_state"][1][-1], t.steps["positions"][4])
    assert (t.plans["selected"] >= 0).all() and (t.plans["selected"] < 6).all()


def test_check_replays_exactly(recorded, capsys):
    pkg, path = recorded
    assert main(["check", str(pkg), str(path)]) == 0
    out = capsys.readouterr().out
    assert "exact: same machine" in out and "ok: 24 steps, 6 plans match" in out


@pytest.mark.parametrize("field,row,col", [("command", 9, 1), ("positions", 14, 0)])
def test_a_changed_value_is_the_first_divergence(recorded, tmp_path, capsys, field, row, col):
    pkg, path = recorded
    t = load_trace(path)
    expected = float(t.steps[field][row, col])
    t.steps[field][row, col] += 1e-3
    bad = tmp_path / "changed.npz"
    save_trace(t, bad)
    assert main(["check", str(pkg), str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    ep, st = int(t.steps["episode"][row]), int(t.steps["step"][row])
    assert err.count("\n") == 0 and f"episode {ep} step {st}:" in err and f"[j{col}]" in err, err
    assert f"{expected + 1e-3:.9g}"[:6] in err and f"{expected:.9g}"[:6] in err and field in err


def test_a_changed_selection_diverges_exactly_but_not_within_tolerance(recorded, tmp_path):
    pkg, path = recorded
    t = load_trace(path)
    replay = load_trace(path)
    t.plans["selected"][2] = (t.plans["selected"][2] + 1) % 6
    exact = compare(t, replay, True, "exact")
    assert exact.divergence.field == "selected candidate" and exact.divergence.step == 8
    loose = compare(t, replay, False, "fp32 tolerance")  # flips between CPUs: its chunk decides
    assert loose.ok and "selected candidate" in loose.notes[0]


def test_tolerance_mode_uses_the_precisions_tolerance(recorded):
    pkg, path = recorded
    t, replay = load_trace(path), load_trace(path)
    t.steps["command"][5, 0] += 0.5e-4 * 2.0  # half the fp32 tolerance of the joint's range (-1..1)
    assert compare(t, replay, False, "fp32").ok
    d = compare(t, replay, True, "exact").divergence  # on the recording's platform: bit for bit
    assert d is not None and (d.episode, d.step, d.field) == (0, 5, "command[j0]") and "exact" in d.detail
    t.steps["command"][5, 0] += 2e-4 * 2.0
    d = compare(t, replay, False, "fp32").divergence
    assert d is not None and d.field == "command[j0]" and "tolerance 0.0001" in d.detail


def test_a_shorter_replay_is_a_divergence(recorded):
    pkg, path = recorded
    t, replay = load_trace(path), load_trace(path)
    keep = 20
    replay.steps = {k: v[:keep] for k, v in replay.steps.items()}
    sel = replay.plans["row"] < keep
    replay.plans = {k: v[sel] for k, v in replay.plans.items()}
    d = compare(t, replay, True, "exact").divergence
    assert d.field == "steps" and d.expected == "24 rows" and d.got == "20 rows" and d.step == 8


def test_compare_mode_says_why_it_is_not_exact():
    here = {"machine": "x86_64", "onnxruntime": "1.20", "numpy": "1.26", "cpu_class": ["avx2"], "int8_kernels": []}
    assert compare_mode(dict(here), here, "int8")[0] is True
    other = {**here, "cpu_class": ["avx2", "avx512_vnni"], "int8_kernels": ["avx512_vnni"]}
    exact, text = compare_mode(other, here, "int8")
    assert not exact and "int8 tolerance 0.07" in text and "int8 kernels differ" in text and "another CPU class" in text
    exact, text = compare_mode({**here, "machine": "aarch64"}, here, "fp32")
    assert not exact and "fp32 tolerance 0.0001" in text and "'aarch64'" in text


# ---------------------------------------------------------------------------- refusals
def test_a_trace_of_another_package_names_both_hashes(recorded, tmp_path, capsys):
    pkg, path = recorded
    other = joints_package(tmp_path / "other", gain=0.06)
    assert main(["check", str(other), str(path)]) == 2
    sha_trace = load_trace(path).meta["manifest_sha256"]
    import hashlib
    sha_other = hashlib.sha256((other / "manifest.json").read_bytes()).hexdigest()
    _one_line_error(capsys, sha_trace, sha_other)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_unreadable_trace_files(recorded, tmp_path, capsys, damage):
    pkg, path = recorded
    bad = tmp_path / "bad.npz"
    data = path.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif damage == "empty":
        bad.write_bytes(b"")
    assert main(["check", str(pkg), str(bad)]) == 2
    _one_line_error(capsys, "bad.npz")


def test_oversized_and_zip_bomb_traces(recorded, tmp_path, capsys, monkeypatch):
    pkg, _ = recorded
    big = tmp_path / "big.npz"
    with open(big, "wb") as fh:
        fh.truncate(65 << 20)  # sparse: no disk used
    assert main(["check", str(pkg), str(big)]) == 2
    _one_line_error(capsys, "bytes; at most")
    monkeypatch.setattr("runtime.hil_trace.MAX_UNPACKED_BYTES", 1 << 20)  # the real limit is 256 MiB
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.npy", b"\0" * (2 << 20))  # compresses to a few KB
    assert main(["check", str(pkg), str(bomb)]) == 2
    _one_line_error(capsys, "unpacks to")


def test_pickled_arrays_are_refused(recorded, tmp_path, capsys):
    pkg, path = recorded
    arrays = _raw_arrays(path)
    arrays["steps.source"] = np.array(list(arrays["steps.source"]), dtype=object)
    bad = tmp_path / "pickle.npz"
    with open(bad, "wb") as fh:
        np.savez(fh, **arrays)  # object arrays are pickled
    assert main(["check", str(pkg), str(bad)]) == 2
    _one_line_error(capsys, "pickle.npz")


@pytest.mark.parametrize("key,index", [("steps.positions", (3, 1)), ("steps.command", (0, 0)),
                                       ("plans.obs_state", (1, 0, 0)), ("plans.distance", (2,)),
                                       ("plans.chunk", (0, 5, 1))])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_are_refused(recorded, tmp_path, capsys, key, index, value):
    pkg, path = recorded
    arrays = _raw_arrays(path)
    arrays[key] = arrays[key].copy()
    arrays[key][index] = value
    assert main(["check", str(pkg), str(_write_raw(tmp_path / "nan.npz", arrays))]) == 2
    _one_line_error(capsys, f"'{key}'", "NaN or inf", str(list(index)))


def test_nan_in_meta_json_is_refused(recorded, tmp_path, capsys):
    pkg, path = recorded
    arrays = _raw_arrays(path)
    text = arrays["meta"].tobytes().decode().replace('"seed": 0', '"seed": NaN', 1)
    arrays["meta"] = np.frombuffer(text.encode(), np.uint8)
    assert main(["check", str(pkg), str(_write_raw(tmp_path / "m.npz", arrays))]) == 2
    _one_line_error(capsys, "'meta' is not valid JSON", "NaN is not allowed")


@pytest.mark.parametrize("change,parts", [
    (lambda a: _set_meta(a, version=99), ("'meta.version'", "99")),
    (lambda a: _set_meta(a, format="zip"), ("'meta.format'",)),
    (lambda a: _set_meta(a, manifest_sha256="abc"), ("'meta.manifest_sha256'",)),
    (lambda a: _set_meta(a, precision="fp16"), ("'meta.precision'", "fp16")),
    (lambda a: {k: v for k, v in a.items() if k != "steps.command"}, ("'steps'", "command")),
    (lambda a: {**a, "steps.extra_thing": np.zeros(3)}, ("unknown",)),
    (lambda a: {**a, "steps.positions": a["steps.positions"][:-1]}, ("'steps.positions'", "rows")),
    (lambda a: {**a, "steps.positions": a["steps.positions"].astype(np.float64)}, ("'steps.positions'", "float64")),
    (lambda a: {**a, "plans.row": a["plans.row"] + 1000}, ("'plans.row'",)),
    (lambda a: {**a, "plans.selected": a["plans.selected"] + 99}, ("'plans.selected'",)),
    (lambda a: {**a, "steps.source": np.array(["plan"] * (len(a["steps.source"]) - 1) + ["rm -rf"])},
     ("'steps.source'", "rm -rf")),
    (lambda a: {k: v for k, v in a.items() if k != "meta"}, ("no 'meta' entry",)),
    (lambda a: {**a, "meta": np.frombuffer(b"[1, 2]", np.uint8)}, ("JSON object",)),
    (lambda a: {**a, "meta": np.frombuffer(b"\xff\xfe{", np.uint8)}, ("not valid JSON",)),
])
def test_malformed_traces_name_the_field(recorded, tmp_path, capsys, change, parts):
    pkg, path = recorded
    bad = _write_raw(tmp_path / "bad.npz", change(_raw_arrays(path)))
    assert main(["check", str(pkg), str(bad)]) == 2
    _one_line_error(capsys, *parts)


def test_unusable_replay_settings_are_refused(recorded, tmp_path, capsys):
    pkg, path = recorded
    arrays = _raw_arrays(path)
    meta = json.loads(arrays["meta"].tobytes())
    meta["settings"]["max_steps"] = 10**9
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    assert main(["check", str(pkg), str(_write_raw(tmp_path / "s.npz", arrays))]) == 2
    _one_line_error(capsys, "max_steps")


def test_save_refuses_non_finite_values(recorded, tmp_path):
    _, path = recorded
    t = load_trace(path)
    t.steps["extras"] = t.steps["extras"].copy()
    t.meta["episodes"][0]["max_progress"] = float("nan")
    with pytest.raises(TraceError, match="JSON"):
        save_trace(t, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_record_refuses_a_package_directory_and_a_realtime_robot(recorded, tmp_path, capsys):
    pkg, _ = recorded
    assert main(["record", str(pkg), "--robot", "emulator-lockstep", "--out", str(pkg / "t.npz")]) == 2
    _one_line_error(capsys, "is a package")
    assert not (pkg / "t.npz").exists()
    assert main(["record", str(pkg), "--robot", "emulator", "--out", str(tmp_path / "t.npz"),
                 "--max-steps", "2"]) == 2
    _one_line_error(capsys, "does not run in lock-step")
    assert main(["record", str(pkg), "--robot", "nonsense", "--out", str(tmp_path / "t.npz")]) == 2
    _one_line_error(capsys, "bad --robot spec")


def test_record_run_is_the_same_through_the_api(recorded):
    pkg, path = recorded
    again = record_run(pkg, RunSettings(precision="fp32", episodes=2, max_steps=12))
    assert isinstance(again, Trace) and compare(load_trace(path), again, True, "exact").ok
