"""The training loop: AdamW, warm-up + cosine, EMA, gradient clipping, checkpoints, progress, metrics."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from trainer.data.dataset import DemoDataset, load_dataset
from trainer.data.task_check import check_task_data
from trainer.models.policy_net import NetworkSpec, PolicyNetwork, build_network
from trainer.models.unet1d import PRESETS, UNetConfig
from trainer.objectives import build_objective
from trainer.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.train.config import TrainConfig
from trainer.train.ema import EMA
from trainer.train.metrics import MetricsLog, plot_metrics
from trainer.train.schedule import warmup_cosine

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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def network_spec(cfg: TrainConfig, dataset: DemoDataset, timestep_embed_dim: int) -> NetworkSpec:
    preset = PRESETS[cfg.net_preset]
    unet = UNetConfig(**{**preset.__dict__, "timestep_embed_dim": timestep_embed_dim})
    return NetworkSpec(state_dim=dataset.state_dim, action_dim=dataset.action_dim,
                       obs_horizon=cfg.data.obs_horizon, pred_horizon=cfg.data.pred_horizon,
                       image_shape=dataset.image_shape, state_encoder=cfg.state_encoder,
                       angle_dims=cfg.angle_dims, unet=unet)


def _to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}


def noisy_state(obs_state: torch.Tensor, state_scale: torch.Tensor, std: float) -> torch.Tensor:
    """Observation-noise augmentation: raw state plus N(0, std^2) in normalised units, i.e. std / scale
    in each raw dimension (min-max normalisation is x * scale + offset)."""
    return obs_state + torch.randn_like(obs_state) * (std / state_scale)


# config keys added since older checkpoints were written: a run saved without them resumes if the rest agrees
_ADDED = {"task_spec", "data.state_key", "data.action_key", "data.image_key"}


def same_config(saved: dict, current: dict, prefix: str = "") -> bool:
    """Would resuming ``saved`` under ``current`` train the same thing? ``steps`` may differ (train on)."""
    for key in set(saved) | set(current):
        path = f"{prefix}{key}"
        if path == "steps":
            continue
        if key not in saved and path in _ADDED:
            continue
        if key not in saved or key not in current:
            return False
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict) and path == "data":
            if not same_config(a, b, "data."):
                return False
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            return False
    return True


def train(cfg: TrainConfig, dataset: DemoDataset | None = None, eval_fn: EvalFn | None = None,
          resume: bool = True, progress: bool = True, command: str = "") -> TrainResult:
    """Train (or resume) a policy as configured; returns where the checkpoints are.

    ``command`` is the command line that started the run, kept in the checkpoint for provenance.
    """
    t_start = time.time()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    if device.type == "cuda":  # TF32 matmuls/convs: ~2x on Ampere+ at no measurable cost for this model
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dataset is None:
        task = cfg.spec()
        if task is not None:  # a task that does not describe the data: one line, before anything is loaded
            check_task_data(task, cfg.data.path)
        dataset = load_dataset(cfg.data)
    objective = build_objective(cfg)

    torch.manual_seed(cfg.seed)
    spec = network_spec(cfg, dataset, objective.timestep_embed_dim)
    net = build_network(spec, dataset.state_stats, dataset.action_stats).to(device)
    ema = EMA(net, max_decay=cfg.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    rng = np.random.default_rng(cfg.seed)
    metrics = MetricsLog(out / "metrics.jsonl")
    step, best_score = 0, -float("inf")

    last_path = out / "last.pt"
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        if state.get("slim"):
            raise ValueError(f"{last_path} is a slim checkpoint ({state['slim']}): it exports but cannot "
                             "resume; use a new --out to train again")
        if not same_config(state["config"], cfg.to_dict()):
            raise ValueError(f"{last_path} was trained with a different configuration; use a new --out "
                             "or --no-resume to start over")
        try:
            net.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            step, best_score = int(state["step"]), float(state.get("best_score", -float("inf")))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            text = " ".join(str(exc).split())
            raise CheckpointError(f"{last_path} cannot be resumed ({type(exc).__name__}: {text[:160]}); use a new "
                                  "--out or --no-resume to start over") from None
        metrics.truncate_after(step)
    elif not resume:
        metrics.path.unlink(missing_ok=True)

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
        }

    net.train()
    loss_value, window_t, window_steps = float("nan"), time.time(), 0
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"{cfg.method} {cfg.task}",
               unit="step", dynamic_ncols=True)
    while step < cfg.steps:
        idx = rng.integers(0, len(dataset), size=cfg.batch_size)
        arrays = dataset.batch(idx)
        bad = next((k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()), None)
        if bad is not None:  # checked at load; a NaN here would be silently rejected by RS-IMLE (loss 0)
            raise TrainingDiverged(f"step {step + 1}: the batch holds NaN or inf in '{bad}' (the dataset changed "
                                   f"after loading?); training stopped; {_saved(last_path)}")
        batch = _to_tensors(arrays, device)
        if cfg.obs_noise > 0:
            batch["obs_state"] = noisy_state(batch["obs_state"], net.state_scale, cfg.obs_noise)
        cond = net.encode(batch["obs_state"], batch.get("obs_image"))
        target = net.normalize_action(batch["action"])
        loss, info = objective.loss(net, cond, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        ema.update(net)
        step += 1
        window_steps += 1
        loss_value = float(loss.detach())
        if not (np.isfinite(loss_value) and bool(torch.isfinite(grad_norm))):
            # the weights of this step are already bad; the checkpoint on disk is the last good state
            raise TrainingDiverged(f"step {step}: loss {loss_value}, gradient norm {float(grad_norm)} (non-finite); "
                                   f"training stopped and this step was not saved; {_saved(last_path)}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = window_steps / max(1e-9, time.time() - window_t)
            window_t, window_steps = time.time(), 0
            metrics.write({"step": step, "loss": loss_value, "lr": sched.get_last_lr()[0],
                           "grad_norm": float(grad_norm), "steps_per_s": rate, **info})
            bar.set_postfix(loss=f"{loss_value:.4f}", rate=f"{rate:.2f}/s")
        bar.update(1)
        if eval_fn is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            result = eval_fn(ema.model, step)
            metrics.write({"step": step, **result})
            if result["eval_score"] > best_score:
                best_score = float(result["eval_score"])  # a plain float: checkpoints hold no numpy objects
                save_checkpoint(out / "best.pt", checkpoint_state())
            net.train()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(last_path, checkpoint_state())
            plot_metrics(metrics.read(), out / "loss.png", f"{cfg.method} on {cfg.task}")
    bar.close()
    best = out / "best.pt"
    return TrainResult(out_dir=out, last_checkpoint=last_path, best_checkpoint=best if best.exists() else None,
                       steps=step, final_loss=loss_value, wall_s=time.time() - t_start)
