"""A checkpoint dict for a network that was never trained (benchmarks and tests export these)."""
from __future__ import annotations

from trainer.data.normalize import MinMax
from trainer.models.policy_net import PolicyNetwork


def checkpoint_state(net: PolicyNetwork, state_stats: MinMax, action_stats: MinMax, method: str = "rs_imle",
                     task: str = "pusht-state", action_horizon: int = 8, dataset: str = "",
                     episodes: list[int] | None = None, step: int = 0) -> dict:
    """The keys of ``trainer.train.checkpoint.load_checkpoint`` that export reads (no optimiser state)."""
    spec = net.spec
    config = {"task": task, "method": method,
              "data": {"path": dataset, "state_dims": list(range(spec.state_dim)), "use_image": spec.image_shape is not None,
                       "obs_horizon": spec.obs_horizon, "pred_horizon": spec.pred_horizon, "action_horizon": action_horizon}}
    return {"config": config, "spec": spec.to_dict(), "method": method, "state_stats": state_stats.to_dict(),
            "action_stats": action_stats.to_dict(), "episodes": list(episodes or []), "step": step,
            "model": net.state_dict(), "ema": None}
