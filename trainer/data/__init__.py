"""Demonstration data: replay buffers, episode subsets, windows and normalisation."""
from trainer.data.dataset import DataConfig, DemoDataset, load_dataset
from trainer.data.normalize import MinMax
from trainer.data.replay_buffer import (DatasetError, ReplayBuffer, default_pusht_path, load_replay_buffer,
                                        write_replay_buffer)
from trainer.data.windows import WindowIndex, build_windows, select_episodes

__all__ = ["DataConfig", "DemoDataset", "load_dataset", "MinMax", "DatasetError", "ReplayBuffer",
           "default_pusht_path", "load_replay_buffer", "write_replay_buffer", "WindowIndex", "build_windows",
           "select_episodes"]
