"""The training loop: the trainer and its extensions, optimisers, checkpoints, metrics and distributed runs."""

from .building import evaluate
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .malloc import keep_freed_memory
from .opening import OpenedCheckpoint, load_trained, open_checkpoint
from .trainer import TrainingError, TrainResult, train

__all__ = ["Checkpoint", "CheckpointError", "OpenedCheckpoint", "TrainResult", "TrainingError", "evaluate",
           "keep_freed_memory", "load_checkpoint", "load_trained", "open_checkpoint", "save_checkpoint", "train"]
