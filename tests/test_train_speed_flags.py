"""Speed flags (#22): each trains, none changes the objective, and the hot loop does not read the device."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

from trainer.train.config import TrainConfig, task_preset


def _cfg(path, out, **flags) -> TrainConfig:
    cfg = task_preset("pusht-state")
    base = {"steps": 3, "batch_size": 8, "net_preset": "tiny", "device": "cpu", "warmup_steps": 1, "threads": 1}
    cfg = dataclasses.replace(cfg, out_dir=str(out), **{**base, **flags})
    cfg.data.path = str(path)
    cfg.rs_imle.n_samples = 4
    return cfg


@pytest.mark.parametrize("flags", [{"amp": "on"}, {"fused_adam": "on"}, {"data_on_device": "on"},
                                   {"amp": "off", "fused_adam": "off", "data_on_device": "off", "compile": "off"}])
def test_each_speed_flag_trains_a_few_steps_on_cpu(tiny_buffer, tmp_path, flags):
    from trainer.train.checkpoint import load_checkpoint
    from trainer.train.loop import train

    path, _, _ = tiny_buffer
    result = train(_cfg(path, tmp_path / "r", **flags), progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    speed = load_checkpoint(result.last_checkpoint)["speed"]
    for name, value in flags.items():
        assert f"{name} {value}" in speed, speed


@pytest.mark.slow
def test_compile_traces_and_trains(tiny_buffer, tmp_path, monkeypatch):
    import trainer.train.speed as speed
    from trainer.train.checkpoint import load_checkpoint
    from trainer.train.loop import train

    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")  # dynamo's graph capture; inductor takes minutes on CPU
    path, _, _ = tiny_buffer
    result = train(_cfg(path, tmp_path / "r", compile="on"), progress=False)
    state = load_checkpoint(result.last_checkpoint)
    assert "compile on" in state["speed"] and not any("_orig_mod" in k for k in state["model"])  # plain keys


def test_flags_that_do_not_change_the_objective_leave_the_loss_curve_alone(tiny_buffer, tmp_path):
    """fused AdamW and device-held data: the same arithmetic, so the same losses (bfloat16 is close, not equal)."""
    from trainer.train.loop import train

    path, _, _ = tiny_buffer
    base = train(_cfg(path, tmp_path / "a", steps=4), progress=False).final_loss
    fast = train(_cfg(path, tmp_path / "b", steps=4, fused_adam="on", data_on_device="on"), progress=False).final_loss
    bf16 = train(_cfg(path, tmp_path / "c", steps=4, amp="on"), progress=False).final_loss
    assert fast == pytest.approx(base, rel=1e-5)
    assert bf16 == pytest.approx(base, rel=2e-2) and bf16 != base


def test_a_run_resumes_with_other_speed_flags(tiny_buffer, tmp_path):
    from trainer.train.loop import same_config, train

    path, _, _ = tiny_buffer
    train(_cfg(path, tmp_path / "r", steps=2), progress=False)
    result = train(_cfg(path, tmp_path / "r", steps=4, fused_adam="on", amp="on", data_on_device="on"), progress=False)
    assert result.steps == 4
    saved = _cfg(path, tmp_path / "r").to_dict()
    del saved["amp"], saved["compile"]  # a checkpoint written before the flags existed
    assert same_config(saved, _cfg(path, tmp_path / "r", compile="on").to_dict())
    assert not same_config(saved, _cfg(path, tmp_path / "r", lr=3e-4).to_dict())


def test_a_resume_refusal_names_the_field_and_both_values_and_bookkeeping_may_differ(tiny_buffer, tmp_path):
    import shutil

    from trainer.train.loop import config_difference, train

    path, _, _ = tiny_buffer
    train(_cfg(path, tmp_path / "r", steps=2), progress=False)
    saved = _cfg(path, tmp_path / "r").to_dict()
    assert config_difference(saved, _cfg(path, tmp_path / "r", lr=3e-4).to_dict())[0] == "lr"
    assert config_difference(saved, _cfg(path, tmp_path / "r", lr=3e-4).to_dict())[2] == 3e-4
    # a run copied to another folder trains on, with other threads and validation settings
    shutil.copytree(tmp_path / "r", tmp_path / "copy")
    moved = _cfg(path, tmp_path / "copy", steps=3, eval_every=0, log_every=7, checkpoint_every=9)
    assert train(moved, progress=False).steps == 3
    assert config_difference(saved, _cfg(path, tmp_path / "r", threads=2, eval_episodes=50).to_dict()) is None
    with pytest.raises(ValueError, match=r"last\.pt was trained with seed = 0, this run asks for 5; use a new --out"):
        train(_cfg(path, tmp_path / "copy", steps=4, seed=5), progress=False)
    other = dict(saved, data={**saved["data"], "obs_horizon": 3})
    assert config_difference(saved, other) == ("data.obs_horizon", saved["data"]["obs_horizon"], 3)
    assert config_difference({k: v for k, v in saved.items() if k != "lr"}, saved) == ("lr", "(missing)", saved["lr"])
    from trainer.train.loop import _short_repr

    long = _short_repr({"task": "x" * 500})  # a changed task_spec stays one short line in the refusal
    assert len(long) == 80 and long.endswith("...") and _short_repr(5) == "5"


@pytest.mark.parametrize("field, value", [("amp", "bf16"), ("compile", "yes"), ("fused_adam", ""),
                                          ("data_on_device", 1)])
def test_bad_speed_flag_values_are_refused_in_one_line(field, value):
    flag = {"amp": "--amp", "compile": "--compile", "fused_adam": "--fused-adam", "data_on_device": "--data-on-device"}
    with pytest.raises(ValueError, match=rf"^{flag[field]} must be one of auto, on, off, got {value}$"):
        TrainConfig(**{field: value})


def test_auto_flags_on_cpu_and_impossible_requests():
    from trainer.train.speed import resolve

    cpu = resolve(TrainConfig(), torch.device("cpu"), image_task=False)
    assert cpu == type(cpu)(amp=False, compile=False, fused_adam=False, data_on_device=False)
    forced = resolve(TrainConfig(amp="on", data_on_device="on"), torch.device("cpu"), image_task=True)
    assert forced.amp and forced.data_on_device


# ---------------------------------------------------------------------------- bfloat16 keeps selection in float32
def test_rs_imle_distances_are_float32_and_break_near_ties_that_bfloat16_would_not():
    from trainer.objectives.rs_imle import rs_imle_loss

    target = torch.full((1, 16, 2), 0.3)
    near = torch.ones(16, 2, dtype=torch.bfloat16)  # distance 0.7 * sqrt(32) = 3.9598
    far = near.clone()
    far[0, 0] = 1.0078125  # the next bfloat16 after 1: distance 3.9612, the same number in bfloat16
    samples = torch.stack([far, near])[None]  # [1, 2, 16, 2]: the farther one first
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, info = rs_imle_loss(target, samples, epsilon=0.03)
    assert int(info["selected"][0]) == 1 and info["dist_min"].dtype == torch.float32
    # the same distances computed in bfloat16 tie, and the tie goes to the wrong (first) sample
    dist16 = torch.linalg.vector_norm(samples.reshape(1, 2, -1) - target.reshape(1, 1, -1).bfloat16(), dim=-1)
    assert dist16[0, 0] == dist16[0, 1] and int(dist16.argmin()) == 0


def test_bfloat16_network_selects_the_float32_samples_on_a_fixed_batch(tiny_buffer):
    """The whole candidate pass under autocast picks (almost always) the latents float32 picks."""
    from trainer.data.dataset import load_dataset
    from trainer.models.policy_net import build_network
    from trainer.objectives.rs_imle import RSIMLEConfig, select_latents
    from trainer.train.config import task_preset
    from trainer.train.loop import network_spec
    from trainer.train.step import TrainStep

    path, _, _ = tiny_buffer
    cfg = task_preset("pusht-state")
    cfg.data.path, cfg.net_preset = str(path), "tiny"
    ds = load_dataset(cfg.data)
    torch.manual_seed(0)
    net = build_network(network_spec(cfg, ds, 0), ds.state_stats, ds.action_stats)
    arrays = ds.batch(np.arange(64))
    obs, action = torch.from_numpy(arrays["obs_state"]), torch.from_numpy(arrays["action"])
    with torch.no_grad():
        cond, target = net.encode(obs), net.normalize_action(action)
    picks = {}
    for amp in (False, True):
        step = TrainStep(net, objective=None, amp=amp)
        forward = step._network if amp else net
        z, _, info = select_latents(forward, cond, target, RSIMLEConfig(n_samples=20), torch.Generator().manual_seed(1))
        picks[amp] = info["selected"]
        assert info["dist_mean"].dtype == torch.float32
    agree = float((picks[True] == picks[False]).float().mean())
    assert agree >= 0.9, agree


# ---------------------------------------------------------------------------- no host sync per step
def test_the_hot_loop_reads_the_device_only_at_logging_points(tiny_buffer, tmp_path, monkeypatch):
    """Reads of tensor values by trainer code (item, float, bool, tolist) do not grow with the step count."""
    from trainer.train.loop import train

    counts = {"n": 0}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **k):
            if "/trainer/" in sys._getframe(1).f_code.co_filename:
                counts["n"] += 1
            return original(self, *a, **k)
        return wrapper

    for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    path, _, _ = tiny_buffer
    reads = []
    for steps in (3, 9):
        counts["n"] = 0
        train(_cfg(path, tmp_path / f"r{steps}", steps=steps, log_every=100, checkpoint_every=100,
                   data_on_device="on"), progress=False)
        reads.append(counts["n"])
    assert reads[0] == reads[1] and reads[0] > 0, reads
