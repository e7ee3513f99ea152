"""End to end: a few training steps on a tiny replay buffer, checkpoint, metrics, plot, resume."""
import json
import subprocess
import sys

import pytest
import torch

from trainer.cli import train_main
from trainer.train import load_checkpoint, network_from_checkpoint


def _args(path, out, steps):
    return ["--task", "pusht-state", "--data", str(path), "--steps", str(steps), "--batch-size", "8",
            "--preset", "tiny", "--n-samples", "4", "--out", str(out), "--checkpoint-every", "3",
            "--warmup", "2", "--no-progress"]


def test_train_writes_checkpoint_metrics_plot_and_resumes(tiny_buffer, tmp_path, capsys):
    path, _, _ = tiny_buffer
    out = tmp_path / "run"
    assert train_main(_args(path, out, 4)) == 0
    for name in ("last.pt", "metrics.jsonl", "loss.png", "config.json", "episodes.json"):
        assert (out / name).exists(), name
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 4 and state["method"] == "rs_imle"
    assert state["command"].startswith("imle-train --task pusht-state --data ")  # provenance for the manifest
    assert json.loads((out / "episodes.json").read_text())["episodes"] == list(range(6))
    first = torch.cat([p.flatten() for p in state["model"].values()])

    # resume: continues from step 4 to 7 instead of starting over
    assert train_main(_args(path, out, 7)) == 0
    resumed = load_checkpoint(out)
    assert resumed["step"] == 7
    assert not torch.equal(first, torch.cat([p.flatten() for p in resumed["model"].values()]))
    steps_logged = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == 7

    net = network_from_checkpoint(resumed)
    with torch.no_grad():
        chunk = net.unnormalize_action(net(torch.randn(3, 16, 2), net.encode(torch.full((1, 2, 5), 200.0))))
    assert chunk.shape == (3, 16, 2) and torch.isfinite(chunk).all()


def test_seeded_runs_are_identical(tiny_buffer, tmp_path):
    path, _, _ = tiny_buffer
    for name in ("a", "b"):
        assert train_main(_args(path, tmp_path / name, 3)) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_validation_while_training_leaves_the_training_trajectory_unchanged(tiny_buffer, tmp_path):
    """--eval-every exports and rolls out the EMA network mid-run; the export seeds torch for its parity
    inputs, which must not reset the training's random stream (it did: every check replayed the
    same latents and noise). Same seed, with and without validation: the same weights."""
    pytest.importorskip("gym_pusht")
    path, _, _ = tiny_buffer
    assert train_main(_args(path, tmp_path / "plain", 4)) == 0
    assert train_main([*_args(path, tmp_path / "validated", 4), "--eval-every", "2", "--eval-episodes", "1"]) == 0
    checks = [r for r in map(json.loads, (tmp_path / "validated" / "metrics.jsonl").read_text().splitlines())
              if "eval_score" in r]
    assert [r["step"] for r in checks] == [2, 4]
    a, b = load_checkpoint(tmp_path / "plain"), load_checkpoint(tmp_path / "validated")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_obs_noise_has_the_asked_std_in_normalised_units_and_changes_training(tiny_buffer, tmp_path):
    from trainer.train.loop import noisy_state

    torch.manual_seed(0)
    scale = torch.tensor([2 / 512, 2 / 512, 2 / 6.28])  # min-max scales of pixels and an angle
    raw = torch.zeros(20000, 2, 3)
    noise_normalised = (noisy_state(raw, scale, 0.02) - raw) * scale
    assert noise_normalised.std(dim=(0, 1)).numpy() == pytest.approx([0.02] * 3, rel=0.03)
    assert abs(float(noise_normalised.mean())) < 1e-3
    path, _, _ = tiny_buffer
    assert train_main(_args(path, tmp_path / "plain", 3)) == 0
    assert train_main([*_args(path, tmp_path / "noisy", 3), "--obs-noise", "0.05"]) == 0
    assert train_main([*_args(path, tmp_path / "noisy2", 3), "--obs-noise", "0.05"]) == 0
    a, b, c = (load_checkpoint(tmp_path / n) for n in ("plain", "noisy", "noisy2"))
    assert b["config"]["obs_noise"] == 0.05
    assert not all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # the noise reached training
    assert all(torch.equal(b["model"][k], c["model"][k]) for k in b["model"])  # and is seeded


def test_negative_obs_noise_is_a_one_line_error(tiny_buffer, tmp_path, capsys):
    assert train_main([*_args(tiny_buffer[0], tmp_path / "bad", 1), "--obs-noise", "-0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "imle-train: error: --obs-noise must be >= 0, got -0.1"
    assert not (tmp_path / "bad").exists()  # refused before any training


def test_user_mistakes_are_one_line_errors(tmp_path):
    cmd = [sys.executable, "-m", "trainer.cli", "--data", str(tmp_path / "missing.zarr"), "--steps", "1",
           "--out", str(tmp_path / "o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("imle-train: error: replay buffer not found")
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_help_explains_presets():
    res = subprocess.run([sys.executable, "-m", "trainer.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "pusht-state" in res.stdout and "paper 256/512/1024" in res.stdout and "resumes" in res.stdout


def test_slim_checkpoint_exports_the_ema_weights_and_refuses_to_resume(tiny_buffer, tmp_path, capsys):
    """What a GPU machine sends home: EMA weights only, a smaller file, the same deployed network."""
    from trainer.train.checkpoint import slim_checkpoint

    path, _, _ = tiny_buffer
    out = tmp_path / "run"
    assert train_main(_args(path, out, 3)) == 0
    full = load_checkpoint(out)
    slim_checkpoint(out / "last.pt", tmp_path / "slim.pt")
    slim = load_checkpoint(tmp_path / "slim.pt")
    assert "optimizer" not in slim and not slim.get("ema") and slim["step"] == 3
    assert (tmp_path / "slim.pt").stat().st_size < (out / "last.pt").stat().st_size / 2
    a, b = network_from_checkpoint(full), network_from_checkpoint(slim)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert slim_checkpoint(tmp_path / "slim.pt")["model"].keys() == slim["model"].keys()  # idempotent

    # a slim last.pt cannot resume: one line, not a KeyError traceback
    slim_checkpoint(out / "last.pt")
    capsys.readouterr()
    assert train_main(_args(path, out, 5)) == 2
    assert "slim checkpoint" in capsys.readouterr().err
