"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` files (gzip-compressed IDX), padded to 32x32."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import DatasetError
from .in_memory import InMemoryImages

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"
FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MEAN, STD = (0.2860,), (0.3530,)  # of the training images, in [0, 1]
CLASSES = 10
_IDX_UBYTE = 0x08


def read_idx(path: Path, dims: int) -> np.ndarray:
    """Read a gzip-compressed IDX file of unsigned bytes with ``dims`` dimensions; clear error if malformed."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path} is not a readable gzip IDX file ({error}); reinstall it: {INSTALL_HINT}") from error
    header = 4 + 4 * dims
    if len(data) < header or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE or data[3] != dims:
        raise DatasetError(f"{path} has no IDX header for a {dims}-D unsigned-byte array; reinstall it: {INSTALL_HINT}")
    shape = struct.unpack(f">{dims}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise DatasetError(
            f"{path} holds {len(data) - header} bytes of data but its header announces shape {shape}; "
            f"the file is truncated or corrupt, reinstall it: {INSTALL_HINT}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


class FashionMNIST(InMemoryImages):
    """Fashion-MNIST as ``(1, size, size)`` float tensors in [0, 1] (28x28 zero-padded to ``size``).

    ``transform`` (e.g. augmentation and normalisation) is applied to each image tensor.
    """

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        train: bool = True,
        size: int = 32,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        root = Path(root)
        paths = [root / name for name in FILES[train]]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DatasetError(
                f"Fashion-MNIST not found: looked in {root} for {', '.join(missing)}. "
                f"Install it with: {INSTALL_HINT}  (or set data.root to a folder holding these files)"
            )
        if size < 28:
            raise DatasetError(f"size={size} is invalid: Fashion-MNIST images are 28x28, use size >= 28")
        images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise DatasetError(
                f"{root}: {len(images)} images of {images.shape[1:]} but {len(labels)} labels; "
                f"reinstall: {INSTALL_HINT}"
            )
        pad = size - 28
        x = torch.from_numpy(images.copy()).unsqueeze(1)
        self.images = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2) * 2)  # uint8, zero (black) padding
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform
