"""The whole network of a policy: raw observations -> condition -> U-Net, normalisation inside.

Keeping normalisation inside the module means the exported ONNX graph takes observations in the
dataset's raw units and returns raw actions, so the robot never re-implements it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from trainer.models.encoders import ResNet18GN, StateEncoder
from trainer.models.unet1d import ConditionalUnet1D, UNetConfig


@dataclass
class NetworkSpec:
    state_dim: int
    action_dim: int
    obs_horizon: int = 2
    pred_horizon: int = 16
    image_shape: tuple[int, int, int] | None = None  # (3, H, W) when the policy sees a camera
    crop: int = 84  # random crop while training, centre crop otherwise (images only)
    state_encoder: str = "identity"
    state_hidden: int = 256
    angle_dims: tuple[int, ...] = ()  # state columns that are angles: fed as (sin, cos), not min-max
    unet: UNetConfig = field(default_factory=UNetConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkSpec":
        d = dict(d)
        d["unet"] = UNetConfig(**{**d["unet"], "down_dims": tuple(d["unet"]["down_dims"])})
        if d.get("image_shape") is not None:
            d["image_shape"] = tuple(d["image_shape"])
        d["angle_dims"] = tuple(d.get("angle_dims", ()))
        return cls(**d)


class PolicyNetwork(nn.Module):
    def __init__(self, spec: NetworkSpec, state_scale, state_offset, action_scale, action_offset):
        super().__init__()
        self.spec = spec
        self.register_buffer("state_scale", torch.as_tensor(state_scale, dtype=torch.float32))
        self.register_buffer("state_offset", torch.as_tensor(state_offset, dtype=torch.float32))
        self.register_buffer("action_scale", torch.as_tensor(action_scale, dtype=torch.float32))
        self.register_buffer("action_offset", torch.as_tensor(action_offset, dtype=torch.float32))
        per_step = spec.state_dim + len(spec.angle_dims)
        self.state_encoder = StateEncoder(per_step * spec.obs_horizon, spec.state_encoder, spec.state_hidden)
        cond_dim = self.state_encoder.out_dim
        self.image_encoder = None
        if spec.image_shape is not None:
            self.image_encoder = ResNet18GN()
            cond_dim += ResNet18GN.out_dim * spec.obs_horizon
        self.cond_dim = cond_dim
        self.unet = ConditionalUnet1D(spec.action_dim, cond_dim, spec.unet)

    # --- normalisation (raw units <-> [-1, 1]) ---
    def normalize_action(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.action_scale + self.action_offset

    def unnormalize_action(self, a: torch.Tensor) -> torch.Tensor:
        return (a - self.action_offset) / self.action_scale

    def state_features(self, obs_state: torch.Tensor) -> torch.Tensor:
        x = obs_state * self.state_scale + self.state_offset
        if self.spec.angle_dims:
            ang = obs_state[..., list(self.spec.angle_dims)]
            x = torch.cat([x, torch.sin(ang), torch.cos(ang)], dim=-1)
            keep = [i for i in range(self.spec.state_dim) if i not in self.spec.angle_dims]
            x = torch.cat([x[..., keep], x[..., self.spec.state_dim:]], dim=-1)
        return x

    def _image_features(self, obs_image: torch.Tensor) -> torch.Tensor:
        b, t = obs_image.shape[:2]
        img = obs_image.reshape(b * t, *obs_image.shape[2:]).float() / 255.0
        c = self.spec.crop
        h, w = img.shape[-2:]
        if c and c < h:
            if self.training:  # one random crop per batch: cheap augmentation, as in Diffusion Policy
                top = int(torch.randint(0, h - c + 1, (1,)))
                left = int(torch.randint(0, w - c + 1, (1,)))
            else:
                top, left = (h - c) // 2, (w - c) // 2
            img = img[:, :, top:top + c, left:left + c]
        return self.image_encoder(img).reshape(b, -1)

    def encode(self, obs_state: torch.Tensor, obs_image: torch.Tensor | None = None) -> torch.Tensor:
        """Raw observation history -> condition [Bo, C]."""
        cond = self.state_encoder(self.state_features(obs_state))
        if self.image_encoder is not None:
            if obs_image is None:
                raise ValueError("this policy needs obs_image")
            cond = torch.cat([cond, self._image_features(obs_image)], dim=-1)
        return cond

    def forward(self, sample: torch.Tensor, cond: torch.Tensor, timestep: torch.Tensor | None = None) -> torch.Tensor:
        """U-Net on a condition: z (IMLE) or a noisy chunk (baselines), normalised units."""
        return self.unet(sample, cond, timestep)


def build_network(spec: NetworkSpec, state_stats, action_stats) -> PolicyNetwork:
    """Network for a spec with MinMax statistics (trainer.data.MinMax)."""
    return PolicyNetwork(spec, state_stats.scale, state_stats.offset, action_stats.scale, action_stats.offset)
