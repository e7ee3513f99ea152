"""Training configuration: hyper-parameters here, task facts from the task file (runtime.task_spec).

A :class:`TrainConfig` holds the optimiser, network size and schedule; what the policy observes and
commands (replay-buffer keys, observed columns, angles, horizons) comes from a TaskSpec through
:func:`config_for_task`, and the whole task travels in the config (``task_spec``) into the checkpoint
and from there into the package's manifest. The ``imle-train`` flags are generated from the fields'
metadata (:func:`hyper_flags`); values are checked in ``__post_init__``.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, dataclass, field

from runtime.package import METHODS
from runtime.task_spec import TaskSpec
from trainer.data.dataset import DataConfig
from trainer.models.encoders import IMAGE_ENCODERS
from trainer.models.unet1d import PRESETS
from trainer.objectives.rs_imle import RSIMLEConfig
from trainer.tasks import builtin_names, resolve_task

STATE_ENCODERS = ("identity", "mlp")
SPEED_CHOICES = ("auto", "on", "off")
SPEED_FIELDS = ("amp", "compile", "fused_adam", "data_on_device", "recompute_encoder")  # resumable with other values
IMAGE_BATCH_SIZE = 64  # default batch for image tasks (Diffusion Policy's image setting); 128 otherwise


def _flag(help: str, flag: str | None = None, choices: tuple | None = None, metavar: str | None = None) -> dict:
    """Field metadata that makes the field an ``imle-train`` option."""
    return {"help": help, "flag": flag, "choices": choices, "metavar": metavar}


@dataclass
class TrainConfig:
    task: str = "pusht-state"  # the task's name (task_spec holds the task itself)
    method: str = field(default="rs_imle", metadata=_flag(
        "objective: rs_imle (the method, default) or a baseline on the same U-Net", choices=METHODS))
    data: DataConfig = field(default_factory=DataConfig)
    net_preset: str = field(default="small", metadata=_flag(
        "U-Net size: " + ", ".join(f"{k} {'/'.join(map(str, v.down_dims))}" + (" (default)" if k == "small" else "")
                                   for k, v in PRESETS.items()), flag="preset", choices=tuple(PRESETS)))
    state_encoder: str = field(default="identity", metadata=_flag("state encoder", choices=STATE_ENCODERS))
    image_encoder: str = field(default="resnet18gn", metadata=_flag(
        "image tasks: resnet18gn (the paper's ResNet-18 with GroupNorm, default) or light (4 conv layers + spatial "
        "softmax keypoints, for CPU budgets)", choices=tuple(IMAGE_ENCODERS)))
    image_crop: int = field(default=84, metadata=_flag(
        "image tasks: side of the random crop per frame while training, centre crop at evaluation and export "
        "(default 84 of Push-T's 96, as Diffusion Policy; 0: none)"))
    angle_dims: tuple[int, ...] = ()  # observed columns that are angles (from the task's `angles`)
    rs_imle: RSIMLEConfig = field(default_factory=RSIMLEConfig)
    steps: int = field(default=3000, metadata=_flag("total optimiser steps"))
    batch_size: int = field(default=128, metadata=_flag(
        f"batch size (default 128; {IMAGE_BATCH_SIZE} for image tasks)"))
    lr: float = field(default=1e-4, metadata=_flag("peak learning rate (default 1e-4)"))
    weight_decay: float = 1e-6
    warmup_steps: int = field(default=500, metadata=_flag("warm-up steps", flag="warmup"))
    grad_clip: float = 1.0
    # Gaussian noise on the observed state while training, std in normalised units ([-1, 1] spans the
    # demos' range): 0.02 is about 5 px on Push-T. Smooths the policy over states the demos miss.
    obs_noise: float = field(default=0.0, metadata=_flag(
        "std of Gaussian noise added to the observed state while training, in normalised units where [-1, 1] "
        "spans the demos (default 0: off; 0.02 is about 5 px on Push-T)"))
    ema_decay: float = 0.9999
    seed: int = field(default=0, metadata=_flag("random seed"))
    device: str = field(default="auto", metadata=_flag("auto (default), cpu or cuda"))
    threads: int = field(default=0, metadata=_flag("torch CPU threads (default: all cores)"))
    # speed flags (trainer/train/speed.py): they change how fast a step runs, never what it computes;
    # a run may resume with other values. auto = the measured best for the device (docs/benchmarks.md)
    amp: str = field(default="auto", metadata=_flag(
        "bfloat16 autocast of the network (RS-IMLE's distances and selection stay float32): auto (on for "
        "CUDA with bfloat16, off on CPU), on, off", choices=SPEED_CHOICES))
    compile: str = field(default="auto", metadata=_flag(
        "torch.compile the U-Net and image encoder: auto (off), on, off", choices=SPEED_CHOICES))
    fused_adam: str = field(default="auto", metadata=_flag(
        "AdamW's fused kernel: auto (on for CUDA), on, off", choices=SPEED_CHOICES))
    data_on_device: str = field(default="auto", metadata=_flag(
        "hold the training windows on the device: auto (on for CUDA state tasks), on, off", choices=SPEED_CHOICES))
    recompute_encoder: str = field(default="auto", metadata=_flag(
        "image tasks: keep only each image-encoder stage's input and recompute its activations in the backward "
        "pass (the same gradients, less memory, slower steps): auto (off), on, off", choices=SPEED_CHOICES))
    out_dir: str = field(default="runs/pusht-state", metadata=_flag("run directory (default runs/<task>)", flag="out"))
    checkpoint_every: int = field(default=500, metadata=_flag("steps between checkpoints"))
    log_every: int = field(default=10, metadata=_flag(
        "steps between metrics records (default 10); the loss is read from the device only then"))
    eval_every: int = field(default=0, metadata=_flag(
        "evaluate the EMA weights in gym-pusht every N steps and keep best.pt (0 = off)"))
    eval_episodes: int = field(default=5, metadata=_flag("episodes per evaluation"))
    task_spec: dict | None = None  # runtime.task_spec.TaskSpec.to_dict(); None in checkpoints made before it

    def __post_init__(self) -> None:
        def need(ok: bool, fld: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"{flag_name(fld)} must be {rule}, got {getattr(self, fld)}")

        need(self.method in METHODS, "method", f"one of {', '.join(METHODS)}")
        # "custom": a network built outside imle-train (trainer.export.synthetic); its checkpoint's spec holds the U-Net
        need(self.net_preset in (*PRESETS, "custom"), "net_preset", f"one of {', '.join(PRESETS)}")
        need(self.state_encoder in STATE_ENCODERS, "state_encoder", f"one of {', '.join(STATE_ENCODERS)}")
        need(self.image_encoder in IMAGE_ENCODERS, "image_encoder", f"one of {', '.join(IMAGE_ENCODERS)}")
        for name in SPEED_FIELDS:
            need(getattr(self, name) in SPEED_CHOICES, name, f"one of {', '.join(SPEED_CHOICES)}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "eval_episodes"):
            need(_is_int(getattr(self, name)) and getattr(self, name) > 0, name, "a positive integer")
        for name in ("warmup_steps", "seed", "threads", "eval_every", "image_crop"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        need(_finite(self.lr) and self.lr > 0, "lr", "a finite number > 0")
        need(_finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite number >= 0")
        need(_finite(self.grad_clip) and self.grad_clip > 0, "grad_clip", "a finite number > 0")
        need(_finite(self.obs_noise) and self.obs_noise >= 0, "obs_noise", ">= 0")
        need(_finite(self.ema_decay) and 0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        if self.task_spec is not None:
            TaskSpec.from_dict(self.task_spec)  # TaskSpecError (a ValueError) names the field

    def spec(self) -> TaskSpec | None:
        return None if self.task_spec is None else TaskSpec.from_dict(self.task_spec)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        data = dict(d.pop("data"))
        data["state_dims"] = tuple(data["state_dims"])
        data = {k: v for k, v in data.items() if k in DataConfig.__dataclass_fields__}
        rs = RSIMLEConfig(**d.pop("rs_imle"))
        d["angle_dims"] = tuple(d.get("angle_dims", ()))
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(data=DataConfig(**data), rs_imle=rs, **known)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------- task -> config
def data_config_for(spec: TaskSpec, path: str = "") -> DataConfig:
    """The replay-buffer selection a task implies: keys, observed columns, horizons."""
    return DataConfig(path=path, state_dims=spec.state.columns, use_image=bool(spec.images),
                      obs_horizon=spec.horizons.obs, pred_horizon=spec.horizons.pred,
                      action_horizon=spec.horizons.action, state_key=spec.state.key, action_key=spec.action.key,
                      image_key=spec.images[0].key if spec.images else "img")


def config_for_task(spec: TaskSpec, **overrides) -> TrainConfig:
    """Default hyper-parameters for ``spec`` (batch size by modality, run directory by name) with its task
    facts filled in; ``overrides`` set TrainConfig fields (validated)."""
    from trainer.train.recipes import recipe_for

    recipe = recipe_for(spec.name)
    base = dict(task=spec.name, task_spec=spec.to_dict(), data=data_config_for(spec),
                angle_dims=spec.state.angle_dims,
                batch_size=IMAGE_BATCH_SIZE if spec.images else 128, out_dir=f"runs/{spec.name}")
    base = TrainConfig(**{**base, **(recipe.overrides() if recipe else {})})
    return dataclasses.replace(base, **overrides) if overrides else base


def task_preset(task: str) -> TrainConfig:
    """Defaults for a built-in task name or a task file path; command-line overrides go on top."""
    return config_for_task(resolve_task(task))


TASKS = builtin_names()


# ---------------------------------------------------------------------------- flags from fields
def flag_name(fld: str) -> str:
    f = TrainConfig.__dataclass_fields__.get(fld)
    flag = (f.metadata.get("flag") if f is not None and f.metadata else None) or fld
    return "--" + flag.replace("_", "-")


def hyper_flags() -> list[tuple[str, str, type, dict]]:
    """(field, --flag, type, metadata) for every TrainConfig field that is an ``imle-train`` option."""
    hints = typing.get_type_hints(TrainConfig)
    return [(f.name, flag_name(f.name), hints[f.name], dict(f.metadata))
            for f in dataclasses.fields(TrainConfig) if f.metadata.get("help")]
