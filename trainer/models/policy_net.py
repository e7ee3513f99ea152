"""The whole network of a policy: raw observations -> condition -> U-Net, normalisation inside.

Keeping normalisation inside the module means the exported ONNX graph takes observations in the
dataset's raw units and returns raw actions, so the robot never re-implements it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from trainer.models.crop import centre_crop, check_crop, random_crop
from trainer.models.encoders import StateEncoder, build_image_encoder
from trainer.models.unet1d import ConditionalUnet1D, UNetConfig


@dataclass
class NetworkSpec:
    state_dim: int
    action_dim: int
    obs_horizon: int = 2
    pred_horizon: int = 16
    image_shape: tuple[int, int, int] | None = None  # (3, H, W) when the policy sees a camera
    crop: int = 84  # random crop while training, centre crop otherwise (images only; 0: none)
    image_encoder: str = "resnet18gn"  # trainer.models.encoders.IMAGE_ENCODERS
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
            check_crop(spec.crop, spec.image_shape[1], spec.image_shape[2])  # CropError: one line, both sizes
            self.image_encoder = build_image_encoder(spec.image_encoder)
            cond_dim += self.image_encoder.out_dim * spec.obs_horizon
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

    def crop(self, obs_image: torch.Tensor) -> torch.Tensor:
        """[B, To, 3, H, W] -> cropped frames: a random crop per frame while training (Diffusion Policy's
        augmentation, on the frames' device), the centre crop in eval mode and in exported graphs."""
        if self.training:
            return random_crop(obs_image, self.spec.crop)
        return centre_crop(obs_image, self.spec.crop)

    def _image_features(self, obs_image: torch.Tensor) -> torch.Tensor:
        b, t = obs_image.shape[:2]
        img = self.crop(obs_image)  # cropped while still uint8: the float copy is the crop's size
        img = img.reshape(b * t, *img.shape[2:]).float() / 255.0
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
