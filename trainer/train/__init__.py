"""Training: configuration, loop, EMA, schedule, checkpoints and metrics."""
from trainer.train.checkpoint import CheckpointError, load_checkpoint, network_from_checkpoint
from trainer.train.config import TASKS, TrainConfig, task_preset
from trainer.train.loop import TrainResult, train

__all__ = ["CheckpointError", "load_checkpoint", "network_from_checkpoint", "TASKS", "TrainConfig",
           "task_preset", "TrainResult", "train"]
