"""Speed flags that leave the objective alone: bfloat16 autocast, torch.compile, fused AdamW, data on the device.

Each is a TrainConfig field (auto / on / off) resolved here for the device the run trains on; the
defaults come from measurements (docs/benchmarks.md, "Training throughput"):
- ``amp``: bfloat16 autocast around the network's passes only. The objective sees float32 outputs,
  so RS-IMLE's distances, its nearest-sample selection and the MSE of the baselines stay float32.
  auto = on for CUDA devices that support bfloat16; off on CPU (slower there, measured).
- ``compile``: ``torch.compile`` of the U-Net and the image encoder (in place: the checkpoint's keys do
  not change). auto = off everywhere until a GPU measurement says otherwise (it costs a minute of
  compilation per run and recompiles for each batch shape; see docs/benchmarks.md).
- ``fused_adam``: AdamW's fused kernel (one launch for all parameters). auto = on for CUDA, off on CPU.
- ``recompute_encoder``: activation checkpointing of the image encoder's stages (memory for time;
  trainer.models.encoders.run_stages). auto = off: it costs ~15% of a CPU step and saves ~0.2 GiB for
  ResNet-18-GN at batch 64 (docs/benchmarks.md, "Image policies"; not enough alone for 2 GB).
- ``data_on_device``: the training windows' state, actions and frame index held as device tensors,
  batches gathered there (no host copy per step). auto = on for CUDA state tasks; image tasks keep their
  decoded frames in host memory unless asked (``on``).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from trainer.data.dataset import DemoDataset
from trainer.train.config import SPEED_CHOICES as CHOICES



@dataclass(frozen=True)
class Speed:
    amp: bool
    compile: bool
    fused_adam: bool
    data_on_device: bool
    recompute_encoder: bool = False

    def describe(self) -> str:
        return ", ".join(f"{k} {'on' if v else 'off'}" for k, v in self.__dict__.items())


def _bf16_ok(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve(cfg, device: torch.device, image_task: bool) -> Speed:
    """The flags' values for this device: ``auto`` decided, ``on`` checked (one-line refusal if impossible)."""
    def pick(name: str, auto: bool, possible: bool = True, why: str = "") -> bool:
        value = getattr(cfg, name)
        if value not in CHOICES:
            raise ValueError(f"--{name.replace('_', '-')} must be one of {', '.join(CHOICES)}, got {value!r}")
        if value == "on" and not possible:
            raise ValueError(f"--{name.replace('_', '-')} on is not possible on {device}: {why}")
        return auto if value == "auto" else value == "on"

    cuda = device.type == "cuda"
    return Speed(
        amp=pick("amp", _bf16_ok(device), device.type in ("cuda", "cpu") and (not cuda or _bf16_ok(device)),
                 "this GPU has no bfloat16"),
        compile=pick("compile", False),
        fused_adam=pick("fused_adam", cuda),
        data_on_device=pick("data_on_device", cuda and not image_task),
        recompute_encoder=pick("recompute_encoder", False, image_task, "this task has no image encoder"),
    )


def autocast(device: torch.device, on: bool):
    """bfloat16 autocast on ``device`` when ``on`` (a no-op context otherwise)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if on else nullcontext()


def make_optimizer(params, cfg, fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def set_fused(opt: torch.optim.Optimizer, fused: bool) -> None:
    """A loaded optimizer state carries the saving run's kernel choice; this run's flag wins."""
    for group in opt.param_groups:
        group["fused"] = fused or None
        group["foreach"] = None


# inductor generates kernels (minutes on a small CPU); tests trace with dynamo only ("eager")
COMPILE_BACKEND = "inductor"


def compile_network(net: torch.nn.Module) -> None:
    """Compile the heavy submodules in place (state_dict keys unchanged; EMA and export see the plain net)."""
    net.unet.compile(backend=COMPILE_BACKEND)
    if getattr(net, "image_encoder", None) is not None:
        net.image_encoder.compile(backend=COMPILE_BACKEND)


class DeviceWindows:
    """The training windows as device tensors; ``batch(idx)`` gathers there (idx: numpy window indices)."""

    def __init__(self, dataset: DemoDataset, device: torch.device):
        self.device = device
        self.obs_horizon = dataset.config.obs_horizon
        self.frames = torch.as_tensor(np.asarray(dataset.windows.frames), dtype=torch.long, device=device)
        self.state = torch.as_tensor(np.asarray(dataset.state, dtype=np.float32), device=device)
        self.actions = torch.as_tensor(np.asarray(dataset.actions, dtype=np.float32), device=device)
        self.images = None
        if dataset.config.use_image:  # [F, H, W, 3] uint8 -> [F, 3, H, W] once
            self.images = torch.as_tensor(np.asarray(dataset.images), device=device).permute(0, 3, 1, 2).contiguous()
        for name in ("state", "actions"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise ValueError(f"the training data's {name} holds NaN or inf (checked once, on the device)")

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        i = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(self.device, non_blocking=True)
        frames = self.frames[i]
        obs = frames[:, :self.obs_horizon]
        out = {"obs_state": self.state[obs], "action": self.actions[frames]}
        if self.images is not None:
            out["obs_image"] = self.images[obs]
        return out
