"""An image package through `imle-run` (the runtime process, the emulated device on a pty): refused
without a camera, run with the simulated camera, flagged with the synthetic one, stopped when its
recorded camera runs out of frames; and `imle-hil record` traces it with the simulated camera."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_pusht")
pytest.importorskip("PIL")
pytest.importorskip("torch")

from runtime_fixtures import run_cli  # noqa: E402,F401  (fixture)

_BUILT: dict[str, Path] = {}


def build_image_package(out_dir: Path) -> Path:
    """A randomly initialised tiny Push-T image policy (light encoder), fp32, actions kept near the middle."""
    import torch

    from trainer.data import MinMax
    from trainer.export import checkpoint_state, export_package
    from trainer.models import NetworkSpec, UNetConfig, build_network

    torch.manual_seed(0)
    spec = NetworkSpec(state_dim=2, action_dim=2, obs_horizon=2, pred_horizon=16, image_shape=(3, 96, 96),
                       crop=84, image_encoder="light", unet=UNetConfig(down_dims=(8, 16), kernel_size=3, n_groups=4))
    stats = MinMax(min=[0.0, 0.0], max=[512.0, 512.0])
    net = build_network(spec, stats, stats)
    with torch.no_grad():
        last = net.unet.final[-1]
        last.weight.mul_(0.05)
        last.bias.zero_()
    state = checkpoint_state(net, stats, stats, task="pusht-image", action_horizon=8)
    return export_package(state, out_dir, calibration="random", progress=False, candidates=4)


@pytest.fixture(scope="module")
def image_package(tmp_path_factory) -> Path:
    if "img" not in _BUILT:
        _BUILT["img"] = build_image_package(tmp_path_factory.mktemp("pkg") / "tiny-pusht-image")
    return _BUILT["img"]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_image_package_without_a_camera_is_refused(image_package, run_cli):
    r = run_cli([image_package, "--robot", "emulator-lockstep", "--max-steps", "8"])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "sees a camera (3x96x96 frames): give --camera NAME" in r.stderr


def test_simulated_camera_lockstep(image_package, run_cli, tmp_path):
    r = run_cli([image_package, "--robot", "emulator-lockstep", "--camera", "simulated", "--max-steps", "24",
                 "--out", tmp_path, "--status", "off"])
    assert r.returncode == 0, r.stderr
    cam = summary(tmp_path)["camera"]
    assert cam["name"] == "simulated" and cam["synthetic"] is False and cam["stale_holds"] == 0
    assert cam["frames"] >= 24 and cam["frame_age_ms"]["n"] >= 24
    assert "camera: simulated" in r.stdout and "SYNTHETIC" not in r.stdout


def test_synthetic_camera_is_flagged(image_package, run_cli, tmp_path):
    r = run_cli([image_package, "--robot", "emulator", "--camera", "synthetic", "--max-steps", "10",
                 "--out", tmp_path, "--status", "off"])
    assert r.returncode in (0, 3), r.stderr
    assert summary(tmp_path)["camera"]["synthetic"] is True
    assert "camera: synthetic -- SYNTHETIC FRAMES, NOT A CAMERA" in r.stdout
    assert "WARNING: camera synthetic: the policy sees SYNTHETIC frames" in r.stderr


def test_recorded_camera_that_runs_out_stops_the_run(image_package, run_cli, tmp_path):
    frames = np.full((8, 96, 96, 3), 255, np.uint8)
    np.savez(tmp_path / "f.npz", frames=frames, timestamps=np.arange(8) / 30.0)
    out = tmp_path / "out"
    r = run_cli([image_package, "--robot", "emulator", "--camera", "recorded", "--camera.path", tmp_path / "f.npz",
                 "--max-steps", "200", "--out", out, "--status", "off"])
    s = summary(out)
    assert r.returncode == 4, r.stderr
    assert s["stop_reason"].startswith("camera: 5 ticks in a row without a usable frame (limit 5)")
    assert s["camera"]["stopped"] == "the recording ended after 8 frames" and s["camera"]["stale_holds"] >= 5
    assert s["estop"]["confirmed"] is True
    assert "STOPPED: camera: 5 ticks in a row" in r.stdout


def test_hil_trace_of_an_image_package_uses_the_simulated_camera(image_package):
    from runtime.hil_run import RunSettings, record_run
    a = record_run(image_package, RunSettings(max_steps=16, seed=2))
    b = record_run(image_package, RunSettings(max_steps=16, seed=2))
    assert a.meta["settings"]["camera"] == "simulated" and a.meta["outcome"]["exit_code"] == 0
    digests = list(a.plans["image_sha"])
    assert len(digests) == 2 and all(len(d) == 64 for d in digests) and digests[0] != digests[1]
    assert digests == list(b.plans["image_sha"])  # the drawn frames are deterministic in lock-step
