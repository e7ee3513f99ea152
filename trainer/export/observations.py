"""Observations for int8 calibration and for the parity report.

Calibration uses observations of the training episodes (the distribution the robot will see);
parity uses held-out episodes (not in the checkpoint's training subset) when any exist, else a
reserved slice: the last windows of the last training episode, which calibration does not use.
Random observations inside the data range serve randomly initialised networks (benchmarks, tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.dataset import DataConfig, load_dataset
from trainer.data.windows import build_windows
from trainer.models.policy_net import NetworkSpec


@dataclass
class ObservationSet:
    obs_state: np.ndarray  # float32 [K, To, Ds] raw units
    obs_image: np.ndarray | None  # uint8 [K, To, 3, H, W]
    source: str

    def __len__(self) -> int:
        return len(self.obs_state)

    def take(self, n: int) -> "ObservationSet":
        return ObservationSet(self.obs_state[:n], None if self.obs_image is None else self.obs_image[:n], self.source)


@dataclass
class Calibration:
    """What export uses: calibration observations (int8) and parity observations (the report)."""

    calibrate: ObservationSet
    parity: ObservationSet


def _sample(dataset, frames: np.ndarray, n: int, rng: np.random.Generator, source: str) -> ObservationSet:
    to = dataset.config.obs_horizon
    pick = frames[rng.choice(len(frames), size=min(n, len(frames)), replace=False)]
    obs_frames = pick[:, :to]
    state = dataset.state[obs_frames].astype(np.float32)
    image = None
    if dataset.config.use_image:
        image = np.ascontiguousarray(np.moveaxis(dataset.images[obs_frames], -1, 2))
    return ObservationSet(state, image, source)


def from_checkpoint_data(state: dict, data_path: str | None = None, n_calibrate: int = 32, n_parity: int = 32,
                         seed: int = 0) -> Calibration:
    """Calibration and parity observations from the checkpoint's own dataset and episode subset."""
    from trainer.train.config import TrainConfig

    cfg: DataConfig = TrainConfig.from_dict(state["config"]).data
    if data_path:
        cfg.path = str(data_path)
    dataset = load_dataset(cfg)  # DatasetError (one line) when the data is not here
    rng = np.random.default_rng(seed)
    trained = np.asarray(state.get("episodes", dataset.episodes.tolist()), dtype=np.int64)
    train_w = build_windows(dataset.buffer, trained, cfg.obs_horizon, cfg.pred_horizon, cfg.action_horizon)
    held = np.setdiff1d(np.arange(dataset.buffer.n_episodes), trained)
    if len(held):
        held_w = build_windows(dataset.buffer, held, cfg.obs_horizon, cfg.pred_horizon, cfg.action_horizon)
        parity_frames, calib_frames = held_w.frames, train_w.frames
        source = f"held-out episodes ({len(held)} not used in training)"
    else:  # every episode trained on: reserve the tail of the last episode from calibration
        last = train_w.episodes == trained[-1]
        cut = np.flatnonzero(last)[len(np.flatnonzero(last)) // 2]
        parity_frames, calib_frames = train_w.frames[cut:], train_w.frames[:cut]
        source = "reserved slice (second half of the last training episode; no held-out episodes exist)"
    return Calibration(calibrate=_sample(dataset, calib_frames, n_calibrate, rng, "training episodes"),
                       parity=_sample(dataset, parity_frames, n_parity, rng, source))


def random_observations(spec: NetworkSpec, state_min: list[float], state_max: list[float], n: int,
                        seed: int = 0, source: str = "random observations in the data range") -> ObservationSet:
    """Uniform states inside the statistics' range and uniform uint8 images (for random-weight networks)."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(state_min, np.float32), np.asarray(state_max, np.float32)
    state = (lo + (hi - lo) * rng.random((n, spec.obs_horizon, spec.state_dim))).astype(np.float32)
    image = None
    if spec.image_shape is not None:
        image = rng.integers(0, 256, size=(n, spec.obs_horizon, *spec.image_shape), dtype=np.uint8)
    return ObservationSet(state, image, source)


def random_calibration(spec: NetworkSpec, state_min: list[float], state_max: list[float], n_calibrate: int = 16,
                       n_parity: int = 16, seed: int = 0) -> Calibration:
    return Calibration(random_observations(spec, state_min, state_max, n_calibrate, seed),
                       random_observations(spec, state_min, state_max, n_parity, seed + 1))
