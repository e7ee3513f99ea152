"""A windowed demonstration dataset: replay buffer + episode subset + windows + statistics."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trainer.data.normalize import MinMax
from trainer.data.replay_buffer import DatasetError, ReplayBuffer, load_replay_buffer
from trainer.data.windows import WindowIndex, build_windows, select_episodes


@dataclass
class DataConfig:
    path: str = ""
    episodes: int | None = None  # count of episodes to use ...
    fraction: float | None = None  # ... or fraction (nested subsets for a fixed seed)
    subset_seed: int = 0
    # what the task file says (trainer.train.config.config_for_task fills these from a TaskSpec)
    state_dims: tuple[int, ...] = (0, 1, 2, 3, 4)  # columns of data/<state_key> the policy observes
    use_image: bool = False
    obs_horizon: int = 2
    pred_horizon: int = 16
    action_horizon: int = 8
    state_key: str = "state"
    action_key: str = "action"
    image_key: str = "img"


@dataclass
class DemoDataset:
    """Raw-unit windows of a replay-buffer subset, with normalisation statistics of that subset."""

    buffer: ReplayBuffer
    config: DataConfig
    episodes: np.ndarray
    windows: WindowIndex
    state_stats: MinMax
    action_stats: MinMax
    state: np.ndarray = field(repr=False)  # [n_frames, Ds] observed state columns

    def __len__(self) -> int:
        return len(self.windows.frames)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Windows ``idx`` as arrays: obs_state [B,To,Ds], action [B,Tp,A], obs_image [B,To,3,H,W] uint8."""
        frames = self.windows.frames[idx]
        to = self.config.obs_horizon
        out = {"obs_state": self.state[frames[:, :to]], "action": self.actions[frames]}
        if self.config.use_image:
            img = self.images[frames[:, :to]]  # [B,To,H,W,3]
            out["obs_image"] = np.ascontiguousarray(np.moveaxis(img, -1, 2))
        return out

    @property
    def actions(self) -> np.ndarray:
        return self.buffer.data[self.config.action_key]

    @property
    def images(self) -> np.ndarray:
        """[n_frames, H, W, 3] uint8 (image tasks only)."""
        return self.buffer.data[self.config.image_key]

    @property
    def state_dim(self) -> int:
        return self.state.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        if not self.config.use_image:
            return None
        h, w, c = self.images.shape[1:]
        return (c, h, w)


def load_dataset(config: DataConfig) -> DemoDataset:
    sk, ak, ik = config.state_key, config.action_key, config.image_key
    images = (ik,) if config.use_image else ()
    buffer = load_replay_buffer(config.path, (sk, ak) + images, image_keys=images)
    state_all = buffer.data[sk]
    if state_all.ndim != 2 or max(config.state_dims) >= state_all.shape[1]:
        raise DatasetError(f"data/{sk} has shape {state_all.shape}; state_dims {config.state_dims} do not fit")
    if buffer.data[ak].ndim != 2:
        raise DatasetError(f"data/{ak} must be [frames, action_dim], got {buffer.data[ak].shape}")
    if config.use_image and (buffer.data[ik].ndim != 4 or buffer.data[ik].shape[-1] != 3):
        raise DatasetError(f"data/{ik} must be [frames, H, W, 3], got {buffer.data[ik].shape}")
    state = np.ascontiguousarray(state_all[:, list(config.state_dims)])
    episodes = select_episodes(buffer.n_episodes, config.episodes, config.fraction, config.subset_seed)
    windows = build_windows(buffer, episodes, config.obs_horizon, config.pred_horizon, config.action_horizon)
    used = np.unique(windows.frames)
    return DemoDataset(
        buffer=buffer, config=config, episodes=episodes, windows=windows,
        state_stats=MinMax.fit(state[used]), action_stats=MinMax.fit(buffer.data[ak][used]), state=state,
    )
