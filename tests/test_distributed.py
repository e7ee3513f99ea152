"""Multi-process training (#22): sampler shards, batch noise, torchrun environment, 1 vs 2 gloo processes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.objectives.noise import BatchNoise, batch_noise
from trainer.objectives.noise import randn as noise_randn
from trainer.train.distributed import DistEnv, env_from_environment, process_device
from trainer.train.launch import check_nproc, strip_nproc
from trainer.train.sampler import WindowSampler


# ---------------------------------------------------------------------------- sampler
def test_ranks_take_disjoint_shares_that_make_the_single_process_batch():
    n, batch = 50, 8
    one = WindowSampler(n, batch, seed=3)
    ranks = [WindowSampler(n, batch, seed=3, rank=r, world=2) for r in range(2)]
    for step in range(20):
        shares = [s.local_indices(step) for s in ranks]
        assert not set(shares[0]) & set(shares[1])
        np.testing.assert_array_equal(np.concatenate(shares), one.global_indices(step))


def test_every_window_is_used_once_per_epoch_and_batches_depend_only_on_the_step():
    n, batch = 24, 8  # three steps per epoch
    s = WindowSampler(n, batch, seed=0)
    epoch0 = np.concatenate([s.global_indices(k) for k in range(3)])
    assert sorted(epoch0) == list(range(n))
    epoch1 = np.concatenate([s.global_indices(k) for k in range(3, 6)])
    assert sorted(epoch1) == list(range(n)) and not np.array_equal(epoch0, epoch1)
    fresh = WindowSampler(n, batch, seed=0)  # a resumed run: no state, same batches
    np.testing.assert_array_equal(fresh.global_indices(4), s.global_indices(4))
    assert not np.array_equal(WindowSampler(n, batch, seed=1).global_indices(0), s.global_indices(0))


def test_a_batch_larger_than_the_dataset_spans_epochs():
    s = WindowSampler(5, 12, seed=0)
    idx = s.global_indices(0)
    assert len(idx) == 12 and set(idx) == set(range(5))


@pytest.mark.parametrize("kwargs, message", [
    ({"n_windows": 10, "global_batch": 7, "world": 2}, "--batch-size 7 does not split evenly across 2 processes"),
    ({"n_windows": 0, "global_batch": 8}, "no training windows"),
    ({"n_windows": 10, "global_batch": 8, "rank": 2, "world": 2}, "rank 2 is not in a world of 2"),
])
def test_sampler_refusals_are_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowSampler(seed=0, **kwargs)


# ---------------------------------------------------------------------------- batch noise
def test_two_ranks_draw_the_rows_one_process_draws():
    one = BatchNoise(seed=5, step=7, offset=0, local_batch=6, global_batch=6, device="cpu")
    halves = [BatchNoise(seed=5, step=7, offset=3 * r, local_batch=3, global_batch=6, device="cpu") for r in range(2)]
    for _ in range(2):  # successive draws of a step differ and stay aligned
        full = one.randn((6, 4, 2), torch.device("cpu"))
        parts = [h.randn((3, 4, 2), torch.device("cpu")) for h in halves]
        torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)
    other_step = BatchNoise(seed=5, step=8, offset=0, local_batch=6, global_batch=6, device="cpu")
    assert not torch.equal(other_step.randn((6, 4, 2), torch.device("cpu")), full)


def test_batch_noise_is_installed_only_inside_its_block_and_refuses_other_shapes():
    noise = BatchNoise(seed=0, step=0, offset=0, local_batch=4, global_batch=4, device="cpu")
    with batch_noise(noise):
        with pytest.raises(ValueError, match=r"batch 4, got \(5, 2\)"):
            noise_randn((5, 2), torch.device("cpu"))
        torch.manual_seed(0)
        inside = noise_randn((4, 2), torch.device("cpu"))
    torch.manual_seed(0)
    outside = noise_randn((4, 2), torch.device("cpu"))  # torch's global generator again
    torch.manual_seed(0)
    assert torch.equal(outside, torch.randn(4, 2)) and not torch.equal(inside, outside)
    with pytest.raises(ValueError, match="do not fit a global batch of 4"):
        BatchNoise(seed=0, step=0, offset=2, local_batch=4, global_batch=4, device="cpu")


# ---------------------------------------------------------------------------- torchrun environment
def test_environment_without_torchrun_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    env = env_from_environment()
    assert env == DistEnv() and not env.enabled and env.is_main


@pytest.mark.parametrize("values, message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer, got 'two'"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK 2 / LOCAL_RANK 2 do not fit WORLD_SIZE 2"),
    ({"WORLD_SIZE": "0"}, "do not fit WORLD_SIZE 0"),
])
def test_bad_torchrun_environment_is_refused(monkeypatch, values, message):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        env_from_environment()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_asked_without_cuda_is_refused():
    with pytest.raises(ValueError, match="--device cuda asked for, but torch sees no CUDA device"):
        process_device("cuda", DistEnv(rank=1, world=2, local_rank=1, local_world=2))
    assert process_device("auto", DistEnv(rank=1, world=2, local_rank=1, local_world=2)).type == "cpu"


def test_nproc_flag_is_stripped_for_the_ranks_and_checked(monkeypatch):
    assert strip_nproc(["--steps", "4", "--nproc", "2", "--out", "r"]) == ["--steps", "4", "--out", "r"]
    assert strip_nproc(["--nproc=2", "--steps", "4"]) == ["--steps", "4"]
    with pytest.raises(ValueError, match="--nproc must be a positive integer, got 0"):
        check_nproc(0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"--nproc 2 given inside a torchrun launch \(WORLD_SIZE 2\)"):
        check_nproc(2)


# ---------------------------------------------------------------------------- 1 vs 2 gloo processes
def _argv(path, out, steps, *extra):
    return ["--task", "pusht-state", "--data", str(path), "--preset", "tiny", "--steps", str(steps),
            "--batch-size", "8", "--n-samples", "4", "--device", "cpu", "--warmup", "1", "--log-every", "1",
            "--checkpoint-every", "3", "--threads", "1", "--out", str(out), "--no-progress", *extra]


def _curve(out) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in records]


@pytest.mark.slow
def test_two_gloo_processes_train_the_single_process_curve_and_resume(tiny_buffer, tmp_path, monkeypatch, capsys):
    """The same global batch on 1 and 2 processes: the same losses and gradient norms, step by step,
    including across a distributed resume; rank 0 alone writes the metrics and checkpoint."""
    from trainer.cli import train_main
    from trainer.train.checkpoint import load_checkpoint

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    path, _, _ = tiny_buffer
    # both runs stop at step 3 and resume to 6 (the schedule's length is --steps, so both must)
    assert train_main(_argv(path, tmp_path / "one", 3)) == 0
    assert train_main(_argv(path, tmp_path / "one", 6)) == 0
    assert train_main(_argv(path, tmp_path / "two", 3, "--nproc", "2")) == 0
    assert load_checkpoint(tmp_path / "two" / "last.pt")["processes"] == 2
    assert train_main(_argv(path, tmp_path / "two", 6, "--nproc", "2")) == 0
    one, two = _curve(tmp_path / "one"), _curve(tmp_path / "two")
    assert [s for s, *_ in two] == [1, 2, 3, 4, 5, 6]  # one record per step: rank 1 wrote nothing
    np.testing.assert_allclose(np.array(two)[:, 1:], np.array(one)[:, 1:], rtol=1e-4)
    a, b = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_batch_that_does_not_split_is_one_line_from_the_ranks(tiny_buffer, tmp_path, monkeypatch, capfd):
    from trainer.cli import train_main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    path, _, _ = tiny_buffer
    argv = _argv(path, tmp_path / "r", 2, "--nproc", "2")
    argv[argv.index("--batch-size") + 1] = "7"
    assert train_main(argv) == 2
    err = capfd.readouterr().err
    assert "imle-train: error: --batch-size 7 does not split evenly across 2 processes; use a multiple of 2" in err
    assert "Traceback" not in err
