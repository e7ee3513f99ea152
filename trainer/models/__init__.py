"""Networks: the conditional 1-D U-Net generator and observation encoders."""
from trainer.models.policy_net import NetworkSpec, PolicyNetwork, build_network
from trainer.models.unet1d import PRESETS, ConditionalUnet1D, UNetConfig

__all__ = ["NetworkSpec", "PolicyNetwork", "build_network", "PRESETS", "ConditionalUnet1D", "UNetConfig"]
