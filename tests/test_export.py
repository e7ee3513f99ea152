"""imle-export: ONNX round trip, dynamic candidate count, parity report, int8, manifest, CLI errors.

Everything runs on a tiny randomly initialised U-Net and a replay buffer written in the test
(6 episodes, 4 of them "trained on", so the parity report uses the 2 held-out ones).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from runtime import PackageError, Policy, load_package
from runtime.onnx_session import make_session
from trainer.data import MinMax, write_replay_buffer
from trainer.export import ExportError, ExportOptions, checkpoint_state, derive_package, export_package
from trainer.export.cli import main as export_main
from trainer.models import NetworkSpec, UNetConfig, build_network
from runtime.package import SamplerSpec

TP, TO, TA = 8, 2, 4
STATE_MIN, STATE_MAX = [0.0, 0.0, 0.0, 0.0, -3.0], [500.0, 500.0, 500.0, 500.0, 3.0]
ACTION_MIN, ACTION_MAX = [10.0, 20.0], [490.0, 480.0]


@pytest.fixture(scope="module")
def buffer_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    lengths = [12, 15, 11, 14, 13, 12]
    n = sum(lengths)
    lo, hi = np.array(STATE_MIN), np.array(STATE_MAX)
    state = (lo + (hi - lo) * rng.random((n, 5))).astype(np.float32)
    alo, ahi = np.array(ACTION_MIN), np.array(ACTION_MAX)
    action = (alo + (ahi - alo) * rng.random((n, 2))).astype(np.float32)
    action[0], action[1] = alo, ahi  # the statistics span exactly [ACTION_MIN, ACTION_MAX]
    path = tmp_path_factory.mktemp("data") / "demo.zarr"
    write_replay_buffer(path, {"state": state, "action": action}, np.cumsum(lengths))
    return path


def tiny_net(timestep_embed_dim: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    spec = NetworkSpec(state_dim=5, action_dim=2, obs_horizon=TO, pred_horizon=TP, angle_dims=(4,),
                       unet=UNetConfig(down_dims=(16, 32), kernel_size=3, timestep_embed_dim=timestep_embed_dim))
    return build_network(spec, MinMax(STATE_MIN, STATE_MAX), MinMax(ACTION_MIN, ACTION_MAX)).eval()


def tiny_state(buffer_path, method: str = "rs_imle", seed: int = 0) -> dict:
    net = tiny_net(16 if method != "rs_imle" else 0, seed)
    return checkpoint_state(net, MinMax(STATE_MIN, STATE_MAX), MinMax(ACTION_MIN, ACTION_MAX), method=method,
                            action_horizon=TA, dataset=str(buffer_path), episodes=[0, 1, 2, 3], step=20)


torch.set_num_threads(1)  # tiny convolutions: threads only add overhead on a shared 2-core machine

FAST = dict(n_calibrate=8, n_parity=8, parity_candidates=4, progress=False)


@pytest.fixture(scope="module")
def imle_pkg(buffer_path, tmp_path_factory):
    state = tiny_state(buffer_path)
    out = export_package(state, tmp_path_factory.mktemp("pkg") / "tiny-imle", quantize="int8", **FAST)
    return out, state


def test_round_trip_at_several_candidate_counts(imle_pkg):
    out, state = imle_pkg
    from trainer.train.checkpoint import network_from_checkpoint

    net = network_from_checkpoint(state)
    obs = np.array([[100, 200, 300, 400, 0.5], [110, 210, 290, 390, 0.6]], np.float32)[None]
    sess = make_session(out / "generator.onnx")
    for n in (1, 7, 32):
        z = np.random.default_rng(n).standard_normal((n, TP, 2), dtype=np.float32)
        got = sess.run(["actions"], {"obs_state": obs, "z": z})[0]
        with torch.no_grad():
            want = net.unnormalize_action(net(torch.from_numpy(z), net.encode(torch.from_numpy(obs)))).numpy()
        assert got.shape == (n, TP, 2)
        assert np.abs(got - want).max() <= 1e-4 * 460  # 1e-4 of the action range


def test_manifest_fields(imle_pkg, buffer_path):
    out, _ = imle_pkg
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["format"] == "imle-policy-package" and raw["format_version"] == 1
    assert raw["method"] == "rs_imle" and raw["task"] == "pusht-state" and raw["name"] == "tiny-imle"
    assert raw["obs"]["state_names"] == ["agent_x", "agent_y", "block_x", "block_y", "block_angle"]
    assert raw["obs"]["image_shape"] is None
    assert raw["action"]["names"] == ["target_x", "target_y"]
    assert raw["action"]["low"] == pytest.approx(ACTION_MIN) and raw["action"]["high"] == pytest.approx(ACTION_MAX)
    assert raw["horizons"] == {"obs": TO, "pred": TP, "action": TA}
    assert raw["control"] == {"period_s": 0.1, "candidates": 32, "temporal_consistency": True, "tc_reset_after": 5}
    assert raw["latent_shape"] == [TP, 2]
    assert raw["normalization"]["state"]["min"] == pytest.approx(STATE_MIN)
    files = {(f["role"], f["precision"]): f for f in raw["files"]}
    assert set(files) == {("generator", "fp32"), ("generator", "int8")}
    assert all(len(f["sha256"]) == 64 for f in raw["files"])
    tr = raw["training"]
    assert tr["dataset"] == str(buffer_path) and tr["episodes"] == [0, 1, 2, 3] and tr["steps"] == 20
    assert tr["code_version"] and tr["config"]["method"] == "rs_imle"
    assert "held-out" in raw["parity"]["source"]


def test_parity_report_and_int8_tolerance(imle_pkg):
    p = load_package(imle_pkg[0]).manifest.parity
    assert p.observations == 8 and p.candidates == 4
    assert p.fp32_vs_torch.max_frac_of_range < 1e-4
    # an untrained network is a harsh case for int8 (no structure in its outputs); still small on average
    assert p.int8_vs_fp32.mean_frac_of_range < 0.03
    assert p.int8_vs_fp32.max_frac_of_range < 0.25
    # the scale reference: the fp32 generator under a small latent change (non-zero, and small on average)
    assert p.latent_jitter_std == 0.01 and 0 < p.fp32_latent_jitter.mean_frac_of_range < 0.05


def test_int8_graph_runs_at_several_counts_and_is_default(imle_pkg):
    pol = Policy(imle_pkg[0], candidates=7)
    assert pol.precision == "int8"
    assert pol.plan(np.zeros((TO, 5), np.float32)).shape == (TP, 2)
    assert Policy(imle_pkg[0], precision="fp32", candidates=1).act(np.zeros((TO, 5), np.float32)).shape == (TA, 2)


def test_seeded_policies_repeat_exactly(imle_pkg):
    obs = np.array([[100, 200, 300, 400, 0.5], [110, 210, 290, 390, 0.6]], np.float32)
    runs = []
    for seed in (3, 3, 4):
        pol = Policy(imle_pkg[0], seed=seed)
        runs.append(np.stack([pol.act(obs + k) for k in range(3)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_fp32_parity_failure_is_an_export_error(buffer_path, tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(ExportError, match="action range") as info:
        export_package(tiny_state(buffer_path), out, options=ExportOptions(parity_tolerance=0.0, **FAST))
    assert "\n" not in str(info.value)
    assert not out.exists() and not any(tmp_path.iterdir())  # nothing half-written


def test_reserved_slice_when_every_episode_was_trained(buffer_path, tmp_path):
    state = tiny_state(buffer_path)
    state["episodes"] = list(range(6))
    out = export_package(state, tmp_path / "all", **FAST)
    assert "reserved slice" in load_package(out).manifest.parity.source


@pytest.mark.parametrize("method", ["rs_imle", "diffusion"])
def test_export_leaves_the_callers_random_streams_alone(buffer_path, tmp_path, monkeypatch, method):
    """Validation while training exports mid-run: re-seeding torch there (CPU, or CUDA through
    torch.manual_seed) would replay the training's latents and noise after every check."""
    def no_global_seeding(*_):
        raise AssertionError("export re-seeded torch's global random streams")

    state = tiny_state(buffer_path, method)  # (builds its network from a seed: before the guard)
    monkeypatch.setattr(torch, "manual_seed", no_global_seeding)
    before = torch.get_rng_state()
    export_package(state, tmp_path / method, **FAST)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("method,sampler", [("diffusion", SamplerSpec("ddim", 4)), ("flow_matching", None)])
def test_baseline_packages_run_through_the_same_runtime(buffer_path, tmp_path, method, sampler):
    out = export_package(tiny_state(buffer_path, method), tmp_path / method, sampler=sampler, **FAST)
    m = load_package(out, verify_graphs=True).manifest
    assert {f.role for f in m.files} == {"encoder", "denoiser"} and m.cond_dim > 0
    assert m.sampler.kind == ("ddim" if method == "diffusion" else "euler")
    assert m.parity.fp32_step_vs_torch.max_frac_of_range < 1e-4  # the checked limit: one network step
    assert m.parity.fp32_vs_torch.max_frac_of_range < 1e-3  # end to end through the sampler: reported
    pol = Policy(out, candidates=5)
    assert pol.act(np.full((TO, 5), 100.0, np.float32)).shape == (TA, 2)
    if method == "diffusion":  # same graphs, another sampler
        d = derive_package(out, tmp_path / "ddpm", SamplerSpec("ddpm", 100))
        assert load_package(d).manifest.sampler.kind == "ddpm"


def test_cli_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert export_main([str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imle-export: error:") and "nope.pt" in err and "\n" not in err


def test_cli_exports_a_checkpoint_file(buffer_path, tmp_path, capsys):
    ckpt = tmp_path / "last.pt"
    torch.save(tiny_state(buffer_path), ckpt)
    rc = export_main([str(ckpt), "--out", str(tmp_path / "pkg"), "--parity-obs", "4", "--calibration-obs", "4",
                      "--no-progress", "--candidates", "16", "--tc-reset-after", "3"])
    assert rc == 0, capsys.readouterr().err
    assert load_package(tmp_path / "pkg").manifest.control.candidates == 16
    assert load_package(tmp_path / "pkg").manifest.control.tc_reset_after == 3
    assert "fp32 vs torch" in capsys.readouterr().out


def test_cli_negative_tc_reset_after_is_one_line(tmp_path, capsys):
    assert export_main([str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"), "--tc-reset-after", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imle-export: error:") and "--tc-reset-after" in err and "\n" not in err


def test_cli_refuses_to_overwrite_a_non_package(buffer_path, tmp_path, capsys):
    ckpt = tmp_path / "last.pt"
    torch.save(tiny_state(buffer_path), ckpt)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "keep.txt").write_text("x")
    assert export_main([str(ckpt), "--out", str(tmp_path / "src"), "--no-progress"]) == 2
    assert "not a model package" in capsys.readouterr().err
    assert (tmp_path / "src" / "keep.txt").exists()


def test_cli_help_runs_without_error():
    r = subprocess.run([sys.executable, "-m", "trainer.export.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--quantize" in r.stdout


def test_refuses_wrong_precision(imle_pkg, tmp_path):
    fp32_only = export_package(imle_pkg[1], tmp_path / "fp32only", **FAST)
    with pytest.raises(PackageError, match="int8"):
        Policy(fp32_only, precision="int8")
    assert Policy(fp32_only).precision == "fp32"


@pytest.mark.parametrize("method", ["diffusion", "flow_matching"])
def test_baseline_int8_export(buffer_path, tmp_path, method):
    """The state encoder has no convolution to quantise: only the denoiser gets an int8 graph."""
    sampler = SamplerSpec("ddim", 3) if method == "diffusion" else None
    out = export_package(tiny_state(buffer_path, method), tmp_path / method, quantize="int8", sampler=sampler, **FAST)
    m = load_package(out, verify_graphs=True).manifest
    assert m.precisions() == ["fp32", "int8"]
    assert m.parity.int8_vs_fp32 is not None and m.parity.int8_vs_fp32.mean_frac_of_range < 0.05
    pol = Policy(out, candidates=3)
    assert pol.precision == "int8" and pol.act(np.full((TO, 5), 100.0, np.float32)).shape == (TA, 2)


def test_groupnorm_rewrite_is_exact_and_never_asks_batch_norm_for_eps_0(monkeypatch):
    """torch 2.11 (the GPU image's) raises on batch_norm eps <= 0, which broke export there."""
    import torch.nn.functional as F

    from trainer.export.rewrites import GroupNormBNAffine

    real = F.batch_norm

    def strict_batch_norm(*args, **kwargs):
        eps = kwargs.get("eps", args[7] if len(args) > 7 else 1e-5)
        if eps <= 0:
            raise ValueError(f"batch_norm eps must be positive, but got {eps}")
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "batch_norm", strict_batch_norm)
    gn = torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = torch.randn(3, 16, 8)
    with torch.no_grad():
        assert torch.allclose(GroupNormBNAffine(gn)(x), gn(x), atol=1e-6, rtol=0)
