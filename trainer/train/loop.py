"""The training loop: AdamW, warm-up + cosine, EMA, gradient clipping, checkpoints, progress, metrics."""
from __future__ import annotations

import inspect
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from trainer.data.dataset import DemoDataset, load_dataset
from trainer.data.task_check import check_task_data
from trainer.models.policy_net import NetworkSpec, PolicyNetwork, build_network
from trainer.models.unet1d import PRESETS, UNetConfig
from trainer.objectives import build_objective
from trainer.objectives.noise import BatchNoise, batch_noise
from trainer.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.train.config import SPEED_FIELDS, TrainConfig
from trainer.train.distributed import (DistEnv, any_across, broadcast_object, env_from_environment, init_distributed,
                                       process_device, reduce_logged, shutdown)
from trainer.train.ema import EMA
from trainer.train.metrics import MetricsLog, plot_metrics
from trainer.train.sampler import WindowSampler
from trainer.train.schedule import warmup_cosine
from trainer.train.speed import DeviceWindows, compile_network, make_optimizer, set_fused
from trainer.train.speed import resolve as resolve_speed
from trainer.train.step import TrainStep, noisy_state  # noqa: F401  (noisy_state: re-exported for tests)

# the normalisation buffers never change: no buffer broadcast before each forward (the flag's name moved in torch 2.13)
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else {"broadcast_buffers": False})

# eval_fn(ema_network, step) -> {"eval_score": float, ...}; used to keep the best checkpoint
EvalFn = Callable[[PolicyNetwork, int], dict]


class TrainingDiverged(ValueError):
    """The loss or the gradient became NaN or inf: training stops; nothing of that step is saved."""


@dataclass
class TrainResult:
    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    steps: int
    final_loss: float
    wall_s: float


def _saved(path: Path) -> str:
    """Where a stopped run can resume from, for its error message."""
    if not path.exists():
        return "no checkpoint was written"
    try:
        step = load_checkpoint(path)["step"]
    except Exception:  # only for the message: the run already failed for another reason
        step = "unknown"
    return f"the last checkpoint ({path}) is from step {step}"


def network_spec(cfg: TrainConfig, dataset: DemoDataset, timestep_embed_dim: int) -> NetworkSpec:
    preset = PRESETS[cfg.net_preset]
    unet = UNetConfig(**{**preset.__dict__, "timestep_embed_dim": timestep_embed_dim})
    return NetworkSpec(state_dim=dataset.state_dim, action_dim=dataset.action_dim,
                       obs_horizon=cfg.data.obs_horizon, pred_horizon=cfg.data.pred_horizon,
                       image_shape=dataset.image_shape, state_encoder=cfg.state_encoder,
                       image_encoder=cfg.image_encoder, crop=cfg.image_crop,
                       angle_dims=cfg.angle_dims, unet=unet)


def _to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type != "cuda":
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}
    # pinned host memory: the copy is queued behind the running step instead of waiting for it
    return {k: torch.from_numpy(np.ascontiguousarray(v)).pin_memory().to(device, non_blocking=True)
            for k, v in batch.items()}


# config keys added since older checkpoints were written: a run saved without them resumes if the rest agrees
_ADDED = {"task_spec", "data.state_key", "data.action_key", "data.image_key", "image_encoder", "image_crop"}
# where and how often it writes, logs and validates, and how many threads it uses: a run copied to another
# folder, or resumed with other bookkeeping, trains the same thing (validation does not touch the trajectory)
_BOOKKEEPING = {"out_dir", "checkpoint_every", "log_every", "eval_every", "eval_episodes", "threads"}


def config_difference(saved: dict, current: dict, prefix: str = "") -> tuple[str, object, object] | None:
    """The first field where resuming ``saved`` under ``current`` would train something else, as
    (field, saved value, current value); None when they agree. ``steps`` may differ (train on)."""
    missing = "(missing)"
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        if path == "steps" or path in _BOOKKEEPING or path in SPEED_FIELDS:
            continue
        if key not in saved and path in _ADDED:
            continue
        if key not in saved or key not in current:
            return path, saved.get(key, missing), current.get(key, missing)
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict) and path == "data":
            diff = config_difference(a, b, "data.")
            if diff:
                return diff
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            return path, a, b
    return None


def same_config(saved: dict, current: dict) -> bool:
    """Would resuming ``saved`` under ``current`` train the same thing?"""
    return config_difference(saved, current) is None


def train(cfg: TrainConfig, dataset: DemoDataset | None = None, eval_fn: EvalFn | None = None,
          resume: bool = True, progress: bool = True, command: str = "") -> TrainResult:
    """Train (or resume) a policy as configured; returns where the checkpoints are.

    ``command`` is the command line that started the run, kept in the checkpoint for provenance.
    Started by torchrun (RANK / WORLD_SIZE set), the process is one of several DDP ranks: the global
    batch ``cfg.batch_size`` is split across them and rank 0 alone writes (trainer/train/distributed.py).
    """
    env = env_from_environment()
    device = process_device(cfg.device, env)
    init_distributed(env, device)
    try:
        return _train(cfg, env, device, dataset, eval_fn, resume, progress, command)
    finally:
        shutdown(env)


def _short_repr(value: object, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 3]}..."


def _read_resume(last_path: Path, cfg: TrainConfig) -> dict:
    state = load_checkpoint(last_path)
    if state.get("slim"):
        raise ValueError(f"{last_path} is a slim checkpoint ({state['slim']}): it exports but cannot "
                         "resume; use a new --out to train again")
    diff = config_difference(state["config"], cfg.to_dict())
    if diff:
        field, was, now = diff
        raise ValueError(f"{last_path} was trained with {field} = {_short_repr(was)}, this run asks for "
                         f"{_short_repr(now)}; use a new --out or --no-resume to start over")
    return state


def _resume_state(last_path: Path, cfg: TrainConfig, resume: bool, env: DistEnv) -> dict | None:
    """Rank 0 reads the checkpoint and hands it to every rank (nodes need no shared filesystem)."""
    box: tuple = ("none",)
    if env.is_main and resume and last_path.exists():
        try:
            box = ("state", _read_resume(last_path, cfg))
        except (CheckpointError, ValueError) as exc:
            box = ("error", isinstance(exc, CheckpointError), str(exc))
    box = broadcast_object(box, env)
    if box[0] == "error":
        raise (CheckpointError if box[1] else ValueError)(box[2])
    return box[1] if box[0] == "state" else None


def _first_bad(pending: list[tuple[int, torch.Tensor, torch.Tensor]], env: DistEnv) -> tuple | None:
    """(step, loss, grad norm) of the first non-finite step since the last check, or None (one host sync)."""
    if not pending:
        return None
    losses = torch.stack([loss.float() for _, loss, _ in pending])
    norms = torch.stack([norm.float() for _, _, norm in pending])
    ok = torch.isfinite(losses) & torch.isfinite(norms)
    if not any_across(~ok.all(), env):
        return None
    flags = ok.tolist()
    i = flags.index(False) if False in flags else len(flags) - 1  # another rank's NaN: report the latest step
    return pending[i][0], float(losses[i]), float(norms[i])


def _train(cfg: TrainConfig, env: DistEnv, device: torch.device, dataset: DemoDataset | None,
           eval_fn: EvalFn | None, resume: bool, progress: bool, command: str) -> TrainResult:
    t_start = time.time()
    out = Path(cfg.out_dir)
    main = env.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif env.enabled and device.type == "cpu":  # processes on one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.local_world))
    if device.type == "cuda":  # TF32 matmuls/convs: ~2x on Ampere+ at no measurable cost for this model
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dataset is None:
        task = cfg.spec()
        if task is not None:  # a task that does not describe the data: one line, before anything is loaded
            check_task_data(task, cfg.data.path)
        dataset = load_dataset(cfg.data)
    objective = build_objective(cfg)
    speed = resolve_speed(cfg, device, bool(dataset.config.use_image))
    sampler = WindowSampler(len(dataset), cfg.batch_size, cfg.seed, env.rank, env.world)

    torch.manual_seed(cfg.seed)
    spec = network_spec(cfg, dataset, objective.timestep_embed_dim)
    net = build_network(spec, dataset.state_stats, dataset.action_stats).to(device)
    if speed.recompute_encoder and net.image_encoder is not None:
        net.image_encoder.recompute = True  # memory for time; the same gradients (trainer.models.encoders)
    ema = EMA(net, max_decay=cfg.ema_decay) if main else None
    opt = make_optimizer(net.parameters(), cfg, speed.fused_adam)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    rng = np.random.default_rng(cfg.seed)  # saved for older readers; batches come from the sampler
    metrics = MetricsLog(out / "metrics.jsonl")
    step, best_score = 0, -float("inf")

    last_path = out / "last.pt"
    state = _resume_state(last_path, cfg, resume, env)
    if state is not None:
        try:
            net.load_state_dict(state["model"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            set_fused(opt, speed.fused_adam)
            sched.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            step, best_score = int(state["step"]), float(state.get("best_score", -float("inf")))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            text = " ".join(str(exc).split())
            raise CheckpointError(f"{last_path} cannot be resumed ({type(exc).__name__}: {text[:160]}); use a new "
                                  "--out or --no-resume to start over") from None
        if main:
            metrics.truncate_after(step)
    elif main and not resume:
        metrics.path.unlink(missing_ok=True)
    del state

    if main:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        (out / "episodes.json").write_text(json.dumps({"episodes": dataset.episodes.tolist(),
                                                       "data": str(cfg.data.path)}))

    def checkpoint_state() -> dict:
        return {
            "config": cfg.to_dict(), "spec": spec.to_dict(), "method": cfg.method, "command": command,
            "state_stats": dataset.state_stats.to_dict(), "action_stats": dataset.action_stats.to_dict(),
            "episodes": dataset.episodes.tolist(), "n_windows": len(dataset),
            "model": net.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "step": step, "best_score": best_score,
            "processes": env.world, "speed": speed.describe(),
        }

    on_device = DeviceWindows(dataset, device) if speed.data_on_device else None
    if speed.compile:
        compile_network(net)
    runner: torch.nn.Module = TrainStep(net, objective, cfg.obs_noise, speed.amp)
    if env.enabled:  # gradients averaged over ranks in backward; the stats buffers never change
        runner = DDP(runner, device_ids=[device] if device.type == "cuda" else None, **_NO_BUFFER_SYNC)

    net.train()
    loss_value, window_t, window_steps = float("nan"), time.time(), 0
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # checked for NaN at logging points only
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and main), dynamic_ncols=True,
               desc=f"{cfg.method} {cfg.task}" + (f" x{env.world}" if env.enabled else ""), unit="step")
    while step < cfg.steps:
        idx = sampler.local_indices(step)
        if on_device is not None:
            batch = on_device.batch(idx)  # checked for NaN once, when it moved to the device
        else:
            arrays = dataset.batch(idx)
            bad = next((k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()), None)
            if bad is not None:  # checked at load; a NaN here would be silently rejected by RS-IMLE (loss 0)
                raise TrainingDiverged(f"step {step + 1}: the batch holds NaN or inf in '{bad}' (the dataset "
                                       f"changed after loading?); training stopped; {_saved(last_path)}")
            batch = _to_tensors(arrays, device)
        noise = BatchNoise(cfg.seed, step, sampler.offset, sampler.local_batch, cfg.batch_size, device)
        with batch_noise(noise):
            loss, info = runner(**batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(net)
        step += 1
        window_steps += 1
        pending.append((step, loss.detach(), grad_norm.detach()))
        log_now = step % cfg.log_every == 0 or step == cfg.steps
        eval_now = eval_fn is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps)
        save_now = step % cfg.checkpoint_every == 0 or step == cfg.steps
        if log_now or eval_now or save_now:
            first = _first_bad(pending, env)
            pending.clear()
            if first is not None:  # the weights are already bad; the checkpoint on disk is the last good state
                raise TrainingDiverged(f"step {first[0]}: loss {first[1]}, gradient norm {first[2]} (non-finite); "
                                       f"training stopped and this step was not saved; {_saved(last_path)}")
        if log_now:  # every rank: the logged loss and diagnostics are means over the global batch
            keys = sorted(info)
            values = torch.stack([loss.detach().float(), grad_norm.detach().float(),
                                  *[torch.as_tensor(info[k], dtype=torch.float32, device=device) for k in keys]])
            values = reduce_logged(values, ["loss", "grad_norm", *keys], env).tolist()
            loss_value = values[0]
            rate = window_steps / max(1e-9, time.time() - window_t)
            window_t, window_steps = time.time(), 0
            if main:
                metrics.write({"step": step, "loss": loss_value, "lr": sched.get_last_lr()[0],
                               "grad_norm": values[1], "steps_per_s": rate, **dict(zip(keys, values[2:]))})
                bar.set_postfix(loss=f"{loss_value:.4f}", rate=f"{rate:.2f}/s")
        bar.update(1)
        if eval_now and main:
            result = eval_fn(ema.model, step)
            metrics.write({"step": step, **result})
            if result["eval_score"] > best_score:
                best_score = float(result["eval_score"])  # a plain float: checkpoints hold no numpy objects
                save_checkpoint(out / "best.pt", checkpoint_state())
            net.train()
        if save_now and main:
            save_checkpoint(last_path, checkpoint_state())
            plot_metrics(metrics.read(), out / "loss.png", f"{cfg.method} on {cfg.task}")
    bar.close()
    best = out / "best.pt"
    return TrainResult(out_dir=out, last_checkpoint=last_path, best_checkpoint=best if best.exists() else None,
                       steps=step, final_loss=loss_value, wall_s=time.time() - t_start)
