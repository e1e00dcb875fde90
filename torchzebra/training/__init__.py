"""The training loop: the trainer and its extensions, optimisers, checkpoints, metrics and distributed runs."""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .malloc import keep_freed_memory
from .trainer import TrainingError, TrainResult, evaluate, load_trained, train

__all__ = ["Checkpoint", "CheckpointError", "TrainResult", "TrainingError", "evaluate", "keep_freed_memory",
           "load_checkpoint", "load_trained", "save_checkpoint", "train"]
