"""A checkpoint dict for a network that was never trained (benchmarks and tests export these)."""
from __future__ import annotations

from trainer.data.dataset import DataConfig
from trainer.data.normalize import MinMax
from trainer.models.policy_net import PolicyNetwork


def checkpoint_state(net: PolicyNetwork, state_stats: MinMax, action_stats: MinMax, method: str = "rs_imle",
                     task: str = "pusht-state", action_horizon: int = 8, dataset: str = "",
                     episodes: list[int] | None = None, step: int = 0, state_dims: tuple[int, ...] | None = None,
                     task_spec: dict | None = None) -> dict:
    """The keys of ``trainer.train.checkpoint.load_checkpoint`` that export reads (no optimiser state).
    ``task_spec``: the task (TaskSpec.to_dict()); None = derived at export from ``task`` and the dimensions."""
    from trainer.train.config import TrainConfig

    spec = net.spec
    data = DataConfig(path=dataset,
                      state_dims=tuple(state_dims if state_dims is not None else range(spec.state_dim)),
                      use_image=spec.image_shape is not None, obs_horizon=spec.obs_horizon,
                      pred_horizon=spec.pred_horizon, action_horizon=action_horizon)
    from trainer.models.unet1d import PRESETS

    preset = next((k for k, v in PRESETS.items() if tuple(v.down_dims) == tuple(spec.unet.down_dims)), "custom")
    # steps: the run's target (>= 1 by TrainConfig's rule); the checkpoint's own "step" says what was trained
    config = TrainConfig(task=task, method=method, data=data, angle_dims=tuple(spec.angle_dims), steps=max(1, step),
                         net_preset=preset, task_spec=task_spec).to_dict()
    return {"config": config, "spec": spec.to_dict(), "method": method, "state_stats": state_stats.to_dict(),
            "action_stats": action_stats.to_dict(), "episodes": list(episodes or []), "step": step,
            "model": net.state_dict(), "ema": None}
