"""Training configuration and task presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from trainer.data.dataset import DataConfig
from trainer.objectives.rs_imle import RSIMLEConfig


@dataclass
class TrainConfig:
    task: str = "pusht-state"
    method: str = "rs_imle"  # rs_imle | diffusion | flow_matching
    data: DataConfig = field(default_factory=DataConfig)
    net_preset: str = "small"  # tiny (32/64/128) | small (64/128/256) | paper (256/512/1024)
    state_encoder: str = "identity"  # identity | mlp
    angle_dims: tuple[int, ...] = ()
    rs_imle: RSIMLEConfig = field(default_factory=RSIMLEConfig)
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    grad_clip: float = 1.0
    # Gaussian noise on the observed state while training, std in normalised units ([-1, 1] spans the
    # demos' range): 0.02 is about 5 px on Push-T. Smooths the policy over states the demos miss.
    obs_noise: float = 0.0
    ema_decay: float = 0.9999
    seed: int = 0
    device: str = "auto"  # auto -> cuda when present, else cpu
    threads: int = 0  # torch CPU threads; 0 = torch's default
    out_dir: str = "runs/pusht-state"
    checkpoint_every: int = 500
    log_every: int = 10
    eval_every: int = 0  # 0 = no evaluation while training (see trainer.evaluate)
    eval_episodes: int = 5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        data = dict(d.pop("data"))
        data["state_dims"] = tuple(data["state_dims"])
        rs = RSIMLEConfig(**d.pop("rs_imle"))
        d["angle_dims"] = tuple(d.get("angle_dims", ()))
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(data=DataConfig(**data), rs_imle=rs, **known)


def task_preset(task: str) -> TrainConfig:
    """Defaults for a named task; command-line overrides are applied on top."""
    if task == "pusht-state":
        # [agent x, agent y, block x, block y, block angle]; the angle wraps at 2*pi, so the
        # network sees it as (sin, cos) rather than a min-max value with a jump.
        return TrainConfig(task=task, data=DataConfig(state_dims=(0, 1, 2, 3, 4)), angle_dims=(4,),
                           out_dir="runs/pusht-state")
    if task == "pusht-image":
        # Diffusion Policy's image setting: 96x96 top-down camera + the agent position.
        return TrainConfig(task=task, data=DataConfig(state_dims=(0, 1), use_image=True), batch_size=64,
                           out_dir="runs/pusht-image")
    raise ValueError(f"unknown task {task!r}: choose pusht-state or pusht-image")


TASKS = ("pusht-state", "pusht-image")
