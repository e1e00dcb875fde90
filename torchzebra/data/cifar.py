"""CIFAR-10/100 from their python-pickle batch folders (``cifar-10-batches-py``, ``cifar-100-python``).

The pickles are read with an unpickler that only accepts the NumPy types these files contain, so a
pickle that would run code is refused instead of executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import DatasetError
from .in_memory import InMemoryImages

LAYOUT = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    100: ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("builtins", "bytes"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists")
        return super().find_class(module, name)


def _load_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _SafeUnpickler(handle, encoding="bytes").load()
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, IndexError) as error:
        raise DatasetError(
            f"{path} is not a readable CIFAR python batch ({type(error).__name__}: {error}); "
            "re-extract the official cifar-*-python.tar.gz there"
        ) from error
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DatasetError(f"{path}: expected N x 3072 image rows and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


class CIFAR(InMemoryImages):
    """CIFAR-10 or CIFAR-100 as ``(3, 32, 32)`` float tensors in [0, 1]; ``root`` holds the batch folder."""

    def __init__(
        self,
        root: str | Path,
        classes: int = 10,
        train: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        folder_name, train_files, test_files, label_key = LAYOUT[classes]
        root = Path(root)
        folder = root if root.name == folder_name else root / folder_name
        files = [folder / name for name in (train_files if train else test_files)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DatasetError(
                f"CIFAR-{classes} not found: looked in {folder} for {', '.join(missing)}. Download "
                f"cifar-{classes}-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html on a machine "
                f"with network access and extract it with: tar -xzf cifar-{classes}-python.tar.gz -C {root}"
            )
        parts = [_load_batch(f, label_key) for f in files]
        self.images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        self.labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        if self.labels.min() < 0 or self.labels.max() >= classes:
            raise DatasetError(f"{folder}: labels outside 0..{classes - 1}; is this CIFAR-{classes}?")
        self.transform = transform
