"""Training objectives on the shared U-Net backbone.

- ``rs_imle``: the method (trainer/objectives/rs_imle.py)
- ``diffusion`` and ``flow_matching``: baselines on the identical backbone
"""
from trainer.objectives.diffusion import DiffusionConfig, DiffusionObjective
from trainer.objectives.flow_matching import FlowConfig, FlowMatchingObjective
from trainer.objectives.rs_imle import RSIMLEConfig, RSIMLEObjective, rs_imle_loss, rs_imle_objective, select_latents

__all__ = ["RSIMLEConfig", "RSIMLEObjective", "rs_imle_loss", "rs_imle_objective", "select_latents", "DiffusionConfig",
           "DiffusionObjective", "FlowConfig", "FlowMatchingObjective", "build_objective"]


def build_objective(train_cfg):
    """The objective named by ``train_cfg.method``."""
    if train_cfg.method == "rs_imle":
        return RSIMLEObjective(train_cfg.rs_imle)
    if train_cfg.method == "diffusion":
        return DiffusionObjective(DiffusionConfig())
    if train_cfg.method == "flow_matching":
        return FlowMatchingObjective(FlowConfig())
    raise ValueError(f"unknown method {train_cfg.method!r} (rs_imle, diffusion, flow_matching)")
