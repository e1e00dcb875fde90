"""The training engine: configs, checkpoints, optimisation, training/evaluation and the two-model run."""

from .allocator import keep_freed_memory
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ConfigError, RunConfig, load_config
from .trainer import TrainingError, TrainResult, evaluate, load_trained, train

__all__ = ["CheckpointError", "ConfigError", "RunConfig", "TrainResult", "TrainingError", "evaluate",
           "keep_freed_memory", "load_checkpoint", "load_config", "load_trained", "save_checkpoint", "train"]
