"""runtime.Policy and runtime.package on hand-built ONNX graphs (onnx.helper), so answers are known.

The IMLE graph here is ``actions = z`` (optionally with NaN for some candidates), so the candidates
are exactly the policy's random draws; baseline graphs are a mean encoder and a linear "velocity".
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime import PackageError, PlanError, Policy, load_package
from runtime.package import (ActionSpec, ControlSpec, FileEntry, Horizons, Manifest, MinMaxStats, Normalization,
                             ObsSpec, SamplerSpec, sha256_file)

TO, TP, TA, DS, A = 2, 8, 4, 3, 2
LOW, HIGH = [0.0, -10.0], [100.0, 10.0]


# ---------------------------------------------------------------------------- graph and package builders
def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def generator_graph(path: Path, nan_when_first_negative: bool = False, z_name: str = "z", pred: int = TP,
                    state_dim: int = DS) -> None:
    """actions = z (+ NaN for candidates whose z[n, 0, 0] < 0); obs_state is read but unused."""
    inputs = [helper.make_tensor_value_info("obs_state", TensorProto.FLOAT, [1, TO, state_dim]),
              helper.make_tensor_value_info(z_name, TensorProto.FLOAT, ["N", pred, A])]
    out = helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", pred, A])
    if nan_when_first_negative:
        nodes = [helper.make_node("Slice", [z_name, "s0", "s1", "ax"], ["first"]),  # z[:, 0:1, 0:1]
                 helper.make_node("Sqrt", ["first"], ["root"]),  # NaN where negative
                 helper.make_node("Mul", ["root", "zero"], ["nanmask"]),  # 0 or NaN
                 helper.make_node("Add", [z_name, "nanmask"], ["actions"])]
        inits = [helper.make_tensor("s0", TensorProto.INT64, [2], [0, 0]),
                 helper.make_tensor("s1", TensorProto.INT64, [2], [1, 1]),
                 helper.make_tensor("ax", TensorProto.INT64, [2], [1, 2]),
                 helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    else:
        nodes, inits = [helper.make_node("Identity", [z_name], ["actions"])], []
    _save(helper.make_graph(nodes, "gen", inputs, [out], inits), path)


def encoder_graph(path: Path, cond_dim: int = TO * DS) -> None:
    inputs = [helper.make_tensor_value_info("obs_state", TensorProto.FLOAT, [1, TO, DS])]
    out = helper.make_tensor_value_info("cond", TensorProto.FLOAT, [1, cond_dim])
    nodes = [helper.make_node("Flatten", ["obs_state"], ["cond"], axis=1)]
    _save(helper.make_graph(nodes, "enc", inputs, [out]), path)


def denoiser_graph(path: Path, cond_dim: int = TO * DS) -> None:
    """output = -sample: as a flow-matching velocity, one Euler step from x0 lands exactly on 0."""
    inputs = [helper.make_tensor_value_info("cond", TensorProto.FLOAT, [1, cond_dim]),
              helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["N", TP, A]),
              helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [1])]
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", TP, A])
    nodes = [helper.make_node("Neg", ["sample"], ["output"])]
    _save(helper.make_graph(nodes, "den", inputs, [out]), path)


def manifest_for(files: list[FileEntry], method: str = "rs_imle", **kw) -> Manifest:
    m = Manifest(
        name="test", method=method, task="test",
        obs=ObsSpec(state_dim=DS, state_names=[f"s{i}" for i in range(DS)]),
        action=ActionSpec(dim=A, names=["a0", "a1"], low=LOW, high=HIGH),
        horizons=Horizons(obs=TO, pred=TP, action=TA), control=ControlSpec(period_s=0.1, candidates=16),
        latent_shape=[TP, A],
        normalization=Normalization(state=MinMaxStats([0.0] * DS, [1.0] * DS), action=MinMaxStats(LOW, HIGH)),
        files=files)
    return replace(m, **kw)


def write_package(root: Path, manifest: Manifest) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return root


def imle_package(root: Path, nan: bool = False, int8_too: bool = False, **graph_kw) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    generator_graph(root / "g.onnx", nan, **graph_kw)
    files = [FileEntry("g.onnx", sha256_file(root / "g.onnx"), "fp32")]
    if int8_too:  # same graph labelled int8: enough to test which file the runtime picks
        generator_graph(root / "g8.onnx", nan, **graph_kw)
        files.append(FileEntry("g8.onnx", sha256_file(root / "g8.onnx"), "int8"))
    return write_package(root, manifest_for(files))


def baseline_package(root: Path, kind: str = "euler", steps: int = 1) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    encoder_graph(root / "enc.onnx")
    denoiser_graph(root / "den.onnx")
    files = [FileEntry("enc.onnx", sha256_file(root / "enc.onnx"), "fp32", role="encoder"),
             FileEntry("den.onnx", sha256_file(root / "den.onnx"), "fp32", role="denoiser")]
    m = manifest_for(files, method="flow_matching" if kind == "euler" else "diffusion",
                     sampler=SamplerSpec(kind, steps, prediction="velocity" if kind == "euler" else "epsilon"),
                     cond_dim=TO * DS)
    return write_package(root, m)


OBS = np.zeros((TO, DS), np.float32)


class FixedDraws:
    """Stands in for the policy's numpy Generator: returns prepared latents in order."""

    def __init__(self, draws: list[np.ndarray]):
        self.draws = list(draws)

    def standard_normal(self, shape, dtype=np.float32):
        z = self.draws.pop(0)
        assert z.shape == tuple(shape)
        return z.astype(dtype)


# ---------------------------------------------------------------------------- selection
def test_first_plan_is_candidate_zero_and_act_slices_from_now(tmp_path):
    pkg = imle_package(tmp_path / "p")
    pol = Policy(pkg, seed=7)
    z = np.random.default_rng(7).standard_normal((16, TP, A), dtype=np.float32)
    acts = pol.act(OBS)
    np.testing.assert_array_equal(pol.last_plan, z[0])
    np.testing.assert_array_equal(acts, z[0][TO - 1:TO - 1 + TA])  # index To-1 is the current time
    info = pol.last_plan_info
    assert info["selected"] == 0 and info["candidates"] == 16 and info["distance"] is None and info["latency_s"] > 0


def test_temporal_consistency_picks_the_closest_candidate(tmp_path):
    pol = Policy(imle_package(tmp_path / "p"), candidates=5)
    first = np.zeros((5, TP, A), np.float32)
    first[0] = np.arange(TP * A, dtype=np.float32).reshape(TP, A)
    rest = first[0][TO - 1 + TA:]  # what act() leaves unexecuted: 3 steps
    second = np.random.default_rng(0).standard_normal((5, TP, A)).astype(np.float32) * 50
    second[3, TO - 1:TO - 1 + len(rest)] = rest + 0.01  # nearly continues the previous plan
    second[1, TO - 1:TO - 1 + len(rest)] = rest + 0.5  # close, but not the closest
    pol._rng = FixedDraws([first, second])
    pol.act(OBS)
    pol.act(OBS)
    assert pol.last_plan_info["selected"] == 3
    # distance in normalised units: 0.01 raw on both dims, scales 2/100 and 2/20, over 3 steps
    want = np.sqrt(3 * ((0.01 * 2 / 100) ** 2 + (0.01 * 2 / 20) ** 2))
    assert pol.last_plan_info["distance"] == pytest.approx(want, rel=1e-3)


def test_selection_matches_brute_force_on_random_draws(tmp_path):
    pol = Policy(imle_package(tmp_path / "p"), seed=11)
    rng = np.random.default_rng(11)
    scale = 2.0 / (np.array(HIGH) - np.array(LOW))
    prev = None
    for _ in range(4):
        z = rng.standard_normal((16, TP, A), dtype=np.float32)
        pol.act(OBS)
        if prev is None:
            want = 0
        else:
            rest = prev[TO - 1 + TA:]
            d = np.linalg.norm(((z[:, TO - 1:TO - 1 + len(rest)] - rest) * scale).reshape(16, -1), axis=1)
            want = int(np.argmin(d))
        assert pol.last_plan_info["selected"] == want
        prev = z[want]


def test_without_temporal_consistency_always_candidate_zero(tmp_path):
    pol = Policy(imle_package(tmp_path / "p"), temporal_consistency=False, seed=2)
    for _ in range(3):
        pol.act(OBS)
        assert pol.last_plan_info["selected"] == 0


def test_reset_and_tc_reset_after_forget_the_previous_plan(tmp_path):
    pol = Policy(imle_package(tmp_path / "p"), tc_reset_after=2)
    dists = []
    for _ in range(5):
        pol.act(OBS)
        dists.append(pol.last_plan_info["distance"])
    assert [d is None for d in dists] == [True, False, True, False, True]
    z_before = pol.last_plan.copy()
    pol.reset()
    pol.act(OBS)
    assert pol.last_plan_info["distance"] is None
    assert not np.array_equal(pol.last_plan, z_before)  # reset does not reseed


def test_selection_settings_come_from_the_package_unless_given(tmp_path):
    pkg = imle_package(tmp_path / "p")
    raw = json.loads((pkg / "manifest.json").read_text())
    assert "tc_reset_after" in raw["control"]
    raw["control"].pop("tc_reset_after")  # a package exported before the field: never re-drawn
    (pkg / "manifest.json").write_text(json.dumps(raw))
    old = Policy(pkg)
    assert old.temporal_consistency and old.tc_reset_after == 0  # 0: never
    raw["control"].update(tc_reset_after=3, temporal_consistency=True)
    (pkg / "manifest.json").write_text(json.dumps(raw))
    pol = Policy(pkg)
    assert pol.tc_reset_after == 3
    for _ in range(7):
        pol.act(OBS)
        assert (pol.last_plan_info["distance"] is None) == (pol._plans_since_reset == 1)  # re-drawn every 3
    assert Policy(pkg, tc_reset_after=0).tc_reset_after == 0  # the caller overrides: never
    raw["control"]["temporal_consistency"] = False
    (pkg / "manifest.json").write_text(json.dumps(raw))
    assert not Policy(pkg).temporal_consistency and Policy(pkg, temporal_consistency=True).temporal_consistency
    with pytest.raises(ValueError, match="tc_reset_after"):
        Policy(pkg, tc_reset_after=-1)


def test_imle_run_flags_override_the_package_selection(tmp_path):
    from runtime.cli import UserError, _load_policy, build_parser

    pkg = str(imle_package(tmp_path / "p"))
    pol = _load_policy(build_parser().parse_args([pkg, "--robot", "emulator", "--no-temporal-consistency",
                                                  "--tc-reset-after", "2"]))
    assert not pol.temporal_consistency and pol.tc_reset_after == 2
    with pytest.raises(UserError, match="tc_reset_after must be >= 0"):  # one line for the user, no traceback
        _load_policy(build_parser().parse_args([pkg, "--robot", "emulator", "--tc-reset-after", "-1"]))


def test_seeded_runs_are_identical(tmp_path):
    pkg = imle_package(tmp_path / "p")
    a = [Policy(pkg, seed=5).act(OBS) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.array_equal(a[0], Policy(pkg, seed=6).act(OBS))


# ---------------------------------------------------------------------------- NaN guard
def test_nan_candidates_are_discarded(tmp_path):
    pol = Policy(imle_package(tmp_path / "p", nan=True), candidates=6)
    z = np.ones((6, TP, A), np.float32)
    z[[0, 2, 5], 0, 0] = -1.0  # candidate 0 is bad: the first finite one (1) is used
    pol._rng = FixedDraws([z])
    chunk = pol.plan(OBS)
    assert np.isfinite(chunk).all()
    assert pol.last_plan_info["selected"] == 1 and pol.last_plan_info["discarded"] == 3


def test_all_candidates_bad_raises_plan_error(tmp_path):
    pol = Policy(imle_package(tmp_path / "p", nan=True), candidates=4)
    pol._rng = FixedDraws([-np.ones((4, TP, A), np.float32)])
    with pytest.raises(PlanError, match="all 4 candidates"):
        pol.act(OBS)
    assert pol.last_plan is None  # nothing bad was remembered


def test_nan_candidates_never_win_temporal_consistency(tmp_path):
    pol = Policy(imle_package(tmp_path / "p", nan=True), candidates=3)
    first = np.ones((3, TP, A), np.float32)
    second = np.full((3, TP, A), 5.0, np.float32)
    second[0] = 1.0
    second[0, 0, 0] = -1.0  # would match the previous plan exactly, but is NaN
    pol._rng = FixedDraws([first, second])
    pol.act(OBS)
    pol.act(OBS)
    assert pol.last_plan_info["selected"] in (1, 2) and np.isfinite(pol.last_plan).all()


# ---------------------------------------------------------------------------- baselines through the runtime
def test_baseline_sampler_and_unnormalisation(tmp_path):
    pol = Policy(baseline_package(tmp_path / "b"), candidates=3)
    chunk = pol.plan(OBS)  # velocity -x: one Euler step from x0 lands on 0 -> the middle of the range
    np.testing.assert_allclose(chunk, np.broadcast_to((np.array(LOW) + np.array(HIGH)) / 2, (TP, A)), atol=1e-5)


def test_ddim_baseline_runs(tmp_path):
    pol = Policy(baseline_package(tmp_path / "b", kind="ddim", steps=3), candidates=2)
    assert pol.act(OBS).shape == (TA, A)


# ---------------------------------------------------------------------------- precision and inputs
def test_precision_default_is_int8_when_present(tmp_path):
    assert Policy(imle_package(tmp_path / "p", int8_too=True)).precision == "int8"
    assert Policy(tmp_path / "p", precision="fp32").precision == "fp32"
    assert Policy(imle_package(tmp_path / "q")).precision == "fp32"
    with pytest.raises(PackageError, match="int8"):
        Policy(tmp_path / "q", precision="int8")


def test_properties(tmp_path):
    pol = Policy(imle_package(tmp_path / "p"))
    assert (pol.obs_horizon, pol.pred_horizon, pol.action_horizon, pol.action_dim, pol.state_dim) == (TO, TP, TA, A, DS)
    assert pol.manifest.control.candidates == pol.candidates == 16


def test_wrong_observation_shape_is_a_clear_error(tmp_path):
    pol = Policy(imle_package(tmp_path / "p"))
    with pytest.raises(ValueError, match=r"obs_state must have shape \(2, 3\)"):
        pol.plan(np.zeros((3, DS), np.float32))


# ---------------------------------------------------------------------------- package refusal
def _edit_manifest(pkg: Path, fn) -> None:
    raw = json.loads((pkg / "manifest.json").read_text())
    fn(raw)
    (pkg / "manifest.json").write_text(json.dumps(raw))


def test_refuses_tampered_file(tmp_path):
    pkg = imle_package(tmp_path / "p")
    data = bytearray((pkg / "g.onnx").read_bytes())
    data[-1] ^= 0xFF
    (pkg / "g.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"files\[0\]\.sha256"):
        load_package(pkg)


def test_refuses_unknown_format_version(tmp_path):
    pkg = imle_package(tmp_path / "p")
    _edit_manifest(pkg, lambda m: m.update(format_version=2))
    with pytest.raises(PackageError, match="format_version"):
        Policy(pkg)


def test_refuses_wrong_format_and_missing_field(tmp_path):
    pkg = imle_package(tmp_path / "p")
    _edit_manifest(pkg, lambda m: m["action"].pop("names"))
    with pytest.raises(PackageError, match=r"'action\.names' is missing"):
        load_package(pkg)
    _edit_manifest(pkg, lambda m: m.update(format="something-else"))
    with pytest.raises(PackageError, match="'format'"):
        load_package(pkg)


def test_refuses_graph_shape_that_disagrees_with_manifest(tmp_path):
    pkg = imle_package(tmp_path / "p", pred=6)  # the graph's chunk has 6 steps, the manifest says 8
    with pytest.raises(PackageError, match="'z' has shape"):
        Policy(pkg)
    pkg2 = imle_package(tmp_path / "q", state_dim=DS + 1)
    with pytest.raises(PackageError, match="'obs_state' has shape"):
        Policy(pkg2)


def test_refuses_wrong_input_name(tmp_path):
    pkg = imle_package(tmp_path / "p", z_name="latent")
    with pytest.raises(PackageError, match="input names"):
        load_package(pkg, verify_graphs=True)


def test_refuses_inconsistent_manifest_fields(tmp_path):
    pkg = imle_package(tmp_path / "p")
    _edit_manifest(pkg, lambda m: m.update(latent_shape=[TP, 3]))
    with pytest.raises(PackageError, match="latent_shape"):
        load_package(pkg)
    pkg = imle_package(tmp_path / "q")
    _edit_manifest(pkg, lambda m: m["action"].update(low=[0.0]))
    with pytest.raises(PackageError, match=r"action\.low"):
        load_package(pkg)
    pkg = imle_package(tmp_path / "r")
    _edit_manifest(pkg, lambda m: m["files"][0].update(name="../g.onnx"))
    with pytest.raises(PackageError, match=r"files\[0\]\.name"):
        load_package(pkg)


def test_refuses_missing_package_and_manifest(tmp_path):
    with pytest.raises(PackageError, match="not found"):
        load_package(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageError, match="manifest.json"):
        load_package(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(tmp_path / "bad")


def test_manifest_round_trips_through_json(tmp_path):
    m = load_package(baseline_package(tmp_path / "b")).manifest
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m



def test_reset_with_a_seed_equals_a_fresh_policy(tmp_path):
    """reset(seed=s) restarts the latent stream exactly as Policy(..., seed=s) does (the control
    loop reseeds each episode this way instead of opening a new onnxruntime session)."""
    pkg = imle_package(tmp_path)
    obs = np.zeros((TO, DS), np.float32)
    fresh = Policy(pkg, seed=7)
    want = [fresh.act(obs) for _ in range(3)]
    reused = Policy(pkg, seed=0)
    reused.act(obs)  # some other episode first
    reused.reset(seed=7)
    got = [reused.act(obs) for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    reused.reset()  # without a seed the stream continues: different latents
    assert not np.array_equal(reused.act(obs), want[0])


def test_device_cpu_plans_and_a_missing_accelerator_is_a_clear_error(tmp_path):
    import onnxruntime as ort

    from runtime.onnx_session import providers_for

    pkg = imle_package(tmp_path / "p")
    assert Policy(pkg, device="cpu").plan(np.zeros((TO, DS), np.float32)).shape == (TP, A)
    with pytest.raises(ValueError, match="unknown device 'npu'"):
        Policy(pkg, device="npu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers_for("cuda")[0] == "CUDAExecutionProvider"
    else:  # the CPU-only onnxruntime of CI: the message says what to install
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            Policy(pkg, device="cuda")


def test_imle_run_reports_a_missing_accelerator_without_a_traceback(tmp_path, capsys):
    import onnxruntime as ort

    from runtime.cli import main

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    code = main([str(imle_package(tmp_path / "p")), "--robot", "emulator-lockstep", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code != 0 and "CUDAExecutionProvider" in err and "Traceback" not in err


def test_action_horizon_override_sets_the_rows_executed_and_the_rest_kept(tmp_path):
    pkg = imle_package(tmp_path / "p")
    assert Policy(pkg).action_horizon == TA  # the package's
    pol = Policy(pkg, action_horizon=2, seed=4)
    out = pol.act(OBS)
    assert pol.action_horizon == 2 and out.shape == (2, A)
    np.testing.assert_array_equal(out, pol.last_plan[TO - 1:TO + 1])  # the rows from the current time
    np.testing.assert_array_equal(pol._rest, pol.last_plan[TO + 1:])  # the rest, for consistency
    assert Policy(pkg, action_horizon=TP - TO + 1).act(OBS).shape == (TP - TO + 1, A)  # to the plan's end
    assert Policy(pkg, action_horizon=np.int64(3)).action_horizon == 3  # numpy integers, as for candidates


@pytest.mark.parametrize("bad", [0, -1, TP - TO + 2, 2.0, True, "3", None.__class__])
def test_action_horizon_outside_the_plan_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=rf"action_horizon must be an integer in 1..{TP - TO + 1}"):
        Policy(imle_package(tmp_path / "p"), action_horizon=bad)
