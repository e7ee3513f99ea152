"""Hostile and broken inputs on the trainer side: replay buffers with NaN, diverging training, and
checkpoints that are truncated, mismatched or carry a pickle that would run code.

Every refusal is one line; the CLIs exit 2 (3 for a diverged training), never with a traceback.
"""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_buffers import make_tiny_buffer
from trainer.cli import train_main
from trainer.data import DatasetError, MinMax, load_dataset, load_replay_buffer, write_replay_buffer
from trainer.export.cli import main as export_main
from trainer.export.synthetic import checkpoint_state
from trainer.models import NetworkSpec, UNetConfig, build_network
from trainer.train.checkpoint import CheckpointError, load_checkpoint, network_from_checkpoint

torch.set_num_threads(1)


def one_line(err: str) -> str:
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err and len(err) < 400, err
    return err


# ---------------------------------------------------------------------------- replay buffers
def poisoned_buffer(path: Path, key: str, frame: int, value: float, lengths=(20, 25, 22, 30, 21)):
    data, ends = make_tiny_buffer(path, lengths=list(lengths))
    data = {k: v.astype(np.float64) for k, v in data.items()}
    data[key][frame, 1] = value
    write_replay_buffer(path, data, ends)
    return ends


@pytest.mark.parametrize("key, value, shown", [("state", np.nan, "nan"), ("action", np.inf, "inf"),
                                                ("action", -np.inf, "-inf"), ("state", 1e39, "inf")])
def test_non_finite_data_is_refused_with_episode_and_frame(tmp_path, key, value, shown):
    ends = poisoned_buffer(tmp_path / "d.zarr", key, frame=int(ends_of(3)) + 7, value=value)
    with pytest.raises(DatasetError) as err:
        load_replay_buffer(tmp_path / "d.zarr")
    msg = one_line(str(err.value))
    assert msg.startswith(f"data/{key}: non-finite value ({shown}) in episode 3 (frame {int(ends[2]) + 7}, "
                          f"step 7 of the episode)"), msg


def ends_of(episode: int, lengths=(20, 25, 22, 30, 21)) -> int:
    return int(np.cumsum(lengths)[episode - 1])


def test_non_finite_first_and_last_frames(tmp_path):
    ends = poisoned_buffer(tmp_path / "a.zarr", "state", frame=0, value=np.nan)
    with pytest.raises(DatasetError, match=r"episode 0 \(frame 0, step 0 of the episode\)"):
        load_replay_buffer(tmp_path / "a.zarr")
    ends = poisoned_buffer(tmp_path / "b.zarr", "action", frame=int(np.sum([20, 25, 22, 30, 21])) - 1, value=np.nan)
    with pytest.raises(DatasetError, match=rf"episode 4 \(frame {int(ends[-1]) - 1}, step 20 of the episode\)"):
        load_replay_buffer(tmp_path / "b.zarr")


def test_non_finite_image_is_refused(tmp_path):
    data, ends = make_tiny_buffer(tmp_path / "i.zarr", n_episodes=3, with_image=True, lengths=[6, 5, 7])
    data["img"][8, 10, 20, 1] = np.nan
    write_replay_buffer(tmp_path / "i.zarr", data, ends)
    with pytest.raises(DatasetError, match=r"data/img: non-finite value \(nan\) in episode 1 \(frame 8, step 2"):
        load_replay_buffer(tmp_path / "i.zarr", keys=("state", "action", "img"))


def test_imle_train_refuses_nan_data_before_training(tmp_path, capsys):
    poisoned_buffer(tmp_path / "d.zarr", "state", frame=ends_of(2) + 3, value=np.nan)
    out = tmp_path / "run"
    rc = train_main(["--task", "pusht-state", "--data", str(tmp_path / "d.zarr"), "--steps", "3", "--batch-size",
                     "8", "--preset", "tiny", "--n-samples", "4", "--out", str(out), "--no-progress"])
    err = one_line(capsys.readouterr().err)
    assert rc == 2 and err.startswith("imle-train: error: data/state: non-finite value (nan) in episode 2")
    assert not (out / "last.pt").exists()


def test_normalisation_refuses_non_finite_statistics():
    with pytest.raises(ValueError, match="not finite"):
        MinMax.fit(np.array([[0.0, 1.0], [np.nan, 2.0]], np.float32))
    assert MinMax.fit(np.array([[0.0, 1.0], [3.0, 2.0]])).max == [3.0, 2.0]


# ---------------------------------------------------------------------------- training that diverges
def _args(path, out, steps):
    return ["--task", "pusht-state", "--data", str(path), "--steps", str(steps), "--batch-size", "8",
            "--preset", "tiny", "--n-samples", "4", "--out", str(out), "--checkpoint-every", "3",
            "--warmup", "2", "--no-progress"]


def test_poisoned_batch_stops_training_with_one_line_and_exit_3(tiny_buffer, tmp_path, capsys, monkeypatch):
    """Data poisoned after the load check (here: in memory) must never end as 'final loss 0.0000' with
    exit 0 (RS-IMLE rejects every sample whose distance is NaN: the loss is exactly 0). The last
    checkpoint on disk stays the good one."""
    path, _, _ = tiny_buffer
    out = tmp_path / "run"
    assert train_main(_args(path, out, 3)) == 0
    good = load_checkpoint(out)
    capsys.readouterr()

    import trainer.train.loop as loop

    def poisoned(cfg):
        ds = load_dataset(cfg)
        ds.buffer.data["action"][:] = np.nan
        return ds

    monkeypatch.setattr(loop, "load_dataset", poisoned)
    rc = train_main(_args(path, out, 6))
    captured = capsys.readouterr()
    err = one_line(captured.err)
    assert rc == 3, captured
    assert err.startswith("imle-train: error: step 4: the batch holds NaN or inf in 'action'") and \
        err.endswith("last.pt) is from step 3"), err
    assert "final loss" not in captured.out
    after = load_checkpoint(out)
    assert after["step"] == 3 and all(torch.equal(good["model"][k], after["model"][k]) for k in good["model"])


class NanAfter:
    """An objective whose loss turns NaN from a given call on (finite data, diverging numerics)."""

    def __init__(self, inner, after: int):
        self.inner, self.after, self.calls = inner, after, 0
        self.timestep_embed_dim = inner.timestep_embed_dim

    def loss(self, net, cond, target):
        self.calls += 1
        loss, info = self.inner.loss(net, cond, target)
        return (loss * float("nan") if self.calls > self.after else loss), info


@pytest.mark.parametrize("after, steps, pattern", [
    (0, 2, r"^step 1: loss nan, gradient norm nan \(non-finite\); training stopped and this step was not saved; "
           r"no checkpoint was written$"),
    (4, 6, r"^step 5: loss nan.*; the last checkpoint \(.*last\.pt\) is from step 3$"),
])
def test_non_finite_loss_stops_training(tiny_buffer, tmp_path, monkeypatch, after, steps, pattern):
    import trainer.train.loop as loop
    from trainer.train.config import task_preset
    from trainer.train.loop import TrainingDiverged, train

    inner_build = loop.build_objective
    monkeypatch.setattr(loop, "build_objective", lambda cfg: NanAfter(inner_build(cfg), after))
    path, _, _ = tiny_buffer
    cfg = task_preset("pusht-state")
    cfg.data.path, cfg.out_dir, cfg.steps = str(path), str(tmp_path / "r"), steps
    cfg.batch_size, cfg.net_preset = 8, "tiny"
    cfg.rs_imle.n_samples, cfg.device, cfg.warmup_steps, cfg.checkpoint_every = 4, "cpu", 1, 3
    with pytest.raises(TrainingDiverged, match=pattern):
        train(cfg, progress=False)


# ---------------------------------------------------------------------------- checkpoints
def tiny_checkpoint() -> dict:
    torch.manual_seed(0)
    spec = NetworkSpec(state_dim=5, action_dim=2, obs_horizon=2, pred_horizon=8, angle_dims=(4,),
                       unet=UNetConfig(down_dims=(16, 32), kernel_size=3, timestep_embed_dim=0))
    lo, hi = MinMax([0.0] * 5, [500.0] * 5), MinMax([0.0, 0.0], [500.0, 500.0])
    net = build_network(spec, lo, hi).eval()
    return checkpoint_state(net, lo, hi, action_horizon=4, step=5)


class Evil:
    """Unpickling this runs a shell command that writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def evil_checkpoint(path: Path, marker: Path, zip_format: bool = True) -> Path:
    state = {**tiny_checkpoint(), "payload": Evil(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    return path


@pytest.mark.parametrize("zip_format", [True, False])
def test_checkpoint_whose_pickle_runs_code_is_refused_without_running_it(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    ckpt = evil_checkpoint(tmp_path / "evil.pt", marker, zip_format)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    msg = one_line(str(err.value))
    assert "holds objects other than tensors and plain values" in msg and "system" in msg, msg
    assert not marker.exists()
    # the same bytes really do run code with the unsafe loader (the test would mean nothing otherwise)
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_imle_export_refuses_a_code_running_checkpoint(tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt = evil_checkpoint(tmp_path / "evil.pt", marker)
    assert export_main([str(ckpt), "--out", str(tmp_path / "pkg"), "--random-calibration", "--no-progress"]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("imle-export: error:") and "weights_only" in err
    assert not marker.exists() and not (tmp_path / "pkg").exists()


def test_resume_refuses_a_code_running_last_pt(tiny_buffer, tmp_path, capsys):
    path, _, _ = tiny_buffer
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    evil_checkpoint(out / "last.pt", marker)
    assert train_main(_args(path, out, 3)) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("imle-train: error:") and "last.pt holds objects other than tensors" in err
    assert not marker.exists()


def test_plain_checkpoints_load_including_numpy_scalars(tmp_path):
    state = {**tiny_checkpoint(), "best_score": np.float64(0.75),
             "numpy_rng": np.random.default_rng(0).bit_generator.state}
    torch.save(state, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert float(loaded["best_score"]) == 0.75 and loaded["numpy_rng"]["bit_generator"] == "PCG64"
    network_from_checkpoint(loaded)


@pytest.mark.parametrize("mutate, pattern", [
    (lambda b: b[: len(b) // 2], r"is not a readable checkpoint \(\w+"),
    (lambda b: b"", r"is not a readable checkpoint"),
    (lambda b: os.urandom(2048), r"is not a readable checkpoint|holds objects other than"),
    (lambda b: pickle.dumps([1, 2, 3]), r"is not a readable checkpoint|is not an imle-policy checkpoint"),
])
def test_truncated_and_garbage_checkpoints(tmp_path, mutate, pattern):
    torch.save(tiny_checkpoint(), tmp_path / "good.pt")
    (tmp_path / "bad.pt").write_bytes(mutate((tmp_path / "good.pt").read_bytes()))
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_checkpoint(tmp_path / "bad.pt")
    one_line(str(err.value))


def test_a_directory_in_place_of_last_pt(tmp_path):
    (tmp_path / "last.pt").mkdir()
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)


def _mutated(tmp_path: Path, fn) -> Path:
    state = tiny_checkpoint()
    fn(state)
    torch.save(state, tmp_path / "m.pt")
    return tmp_path / "m.pt"


@pytest.mark.parametrize("fn, pattern", [
    (lambda s: s.pop("state_stats"), r"checkpoint field 'state_stats' is NoneType, expected dict"),
    (lambda s: s.update(spec=[1, 2]), r"is not an imle-policy checkpoint|checkpoint field 'spec' is list"),
    (lambda s: s["model"].update({next(iter(s["model"])): 3.0}),
     r"checkpoint field 'model' entry '.*' is not a tensor"),
    (lambda s: s["model"][next(k for k in s["model"] if "weight" in k)].fill_(float("nan")),
     r"checkpoint field 'model' tensor '.*weight' holds NaN or inf"),
])
def test_mismatched_checkpoint_fields_are_refused_at_load(tmp_path, fn, pattern):
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_checkpoint(_mutated(tmp_path, fn))
    one_line(str(err.value))


@pytest.mark.parametrize("fn, pattern", [
    (lambda s: s["spec"]["unet"].update(down_dims=[10**6, 10**6]),
     r"'spec\.unet\.down_dims\[0\]' is 1000000; must be an integer in 1\.\.8192"),
    (lambda s: s["spec"].update(action_dim=3),
     r"'action_stats\.min' must hold 3 finite numbers \(spec\), got \[0\.0, 0\.0\]"),
    (lambda s: s["spec"]["unet"].update(down_dims=[16, 64]),
     r"does not describe a network this code can build \(RuntimeError: Error\(s\) in loading state_dict"),
    (lambda s: s["spec"].pop("state_dim"), r"does not describe a network this code can build \(TypeError: "),
    (lambda s: s["state_stats"].update(min=[0.0]),
     r"'state_stats\.min' must hold 5 finite numbers \(spec\), got \[0\.0\]"),
    (lambda s: s["action_stats"].update(max=[1.0, float("inf")]), r"'action_stats\.max' must hold 2 finite numbers"),
])
def test_checkpoint_that_does_not_fit_its_network(tmp_path, capsys, fn, pattern):
    path = _mutated(tmp_path, fn)
    with pytest.raises(CheckpointError, match=pattern) as err:
        network_from_checkpoint(load_checkpoint(path))
    one_line(str(err.value))
    assert export_main([str(path), "--out", str(tmp_path / "pkg"), "--random-calibration", "--no-progress"]) == 2
    assert one_line(capsys.readouterr().err).startswith("imle-export: error:")


def test_resume_from_a_checkpoint_of_another_shape_is_one_line(tiny_buffer, tmp_path, capsys):
    path, _, _ = tiny_buffer
    out = tmp_path / "run"
    assert train_main(_args(path, out, 3)) == 0
    state = torch.load(out / "last.pt", weights_only=True)
    state["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(state, out / "last.pt")
    capsys.readouterr()
    assert train_main(_args(path, out, 6)) == 2
    err = one_line(capsys.readouterr().err)
    assert "last.pt cannot be resumed (ValueError" in err


# ---------------------------------------------------------------------------- imle-eval on hostile packages
def test_imle_eval_refuses_hostile_packages_with_one_line(tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    from trainer.evaluate.cli import main as eval_main

    shipped = Path(__file__).resolve().parents[1] / "exported_models" / "pusht-state-imle"
    assert eval_main([str(shipped), "--episodes", "1", "--candidates", "1000000", "--quiet"]) == 2
    assert one_line(capsys.readouterr().err) == "imle-eval: error: candidates is 1000000; must be in 1..4096"
    pkg = tmp_path / "pkg"
    shutil.copytree(shipped, pkg)
    (pkg / "manifest.sig").unlink(missing_ok=True)
    (pkg / "manifest.json").write_text("[" * 200_000)
    assert eval_main([str(pkg), "--episodes", "1", "--quiet"]) == 2
    assert "JSON nesting depth is 200000; at most 32" in one_line(capsys.readouterr().err)
