"""Batches made on the training device: an in-memory data set's uint8 images are copied there once, each
batch is gathered in one indexing op, converted and augmented there; synthetic batches are generated there.

Which items form each batch comes from ``order``, an iterable of index batches (the trainer passes a
DataLoader over ``range(len(dataset))`` with its own sampler), so the shuffle, the distributed rank's shard
and ``drop_last`` are exactly those of the DataLoader path. Other data sets (image files) keep a DataLoader.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from torch.utils.data import Dataset, Subset

from .augment import batched
from .in_memory import InMemoryImages, to_unit
from .synthetic import Synthetic

MakeBatch = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def loader_kind(setting: str, device: torch.device) -> str:
    """What ``data.loader=setting`` means on ``device``: ``auto`` is ``device`` on CUDA, else ``workers``."""
    if setting == "auto":
        return "device" if device.type == "cuda" else "workers"
    return setting


def _unwrap(dataset: Dataset) -> tuple[Dataset, torch.Tensor | None]:
    """The data set under any ``Subset`` wrappers and where ``dataset``'s items sit in it (None: all, in order)."""
    if not isinstance(dataset, Subset):
        return dataset, None
    base, positions = _unwrap(dataset.dataset)
    indices = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
    return base, indices if positions is None else positions[indices]


def batch_maker(dataset: Dataset, device: torch.device, by_index: bool = False) -> MakeBatch | None:
    """A function from ``dataset`` indices on ``device`` (and a generator there) to a batch made on ``device``;
    None unless ``dataset`` is (a subset of) InMemoryImages with a per-batch transform, or Synthetic (unless
    ``by_index``: its batches are fresh draws, not the items at the indices)."""
    base, positions = _unwrap(dataset)
    if isinstance(base, Synthetic) and not by_index:
        return lambda index, generator: base.batch(len(index), generator)
    transform = batched(base.transform) if isinstance(base, InMemoryImages) else None
    if transform is None:
        return None
    images, labels = base.on(device)
    positions = None if positions is None else positions.to(device)

    def make(index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``dataset``'s items at ``index``: gathered, converted to [0, 1] and transformed."""
        index = index if positions is None else positions[index]
        return transform(to_unit(images[index]), generator), labels[index]

    return make


class DeviceBatches:
    """``(images, labels)`` batches made on ``device`` by ``make`` for each index batch of ``order`` (with
    ``indexed``, ``(images, labels, indices)``); random augmentation draws from a generator on ``device`` seeded
    with ``seed``, so an epoch repeats exactly."""

    def __init__(self, make: MakeBatch, order: Iterable[torch.Tensor], device: torch.device, seed: int,
                 indexed: bool = False) -> None:
        self.make, self.order, self.device, self.seed, self.indexed = make, order, device, seed, indexed

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        generator = torch.Generator(self.device).manual_seed(self.seed)
        for index in self.order:
            index = index.to(self.device, non_blocking=True)
            batch = self.make(index, generator)
            yield (*batch, index) if self.indexed else batch


class Indexed(Dataset):
    """``dataset``'s items with their index appended, ``(image, label, index)``: a DataLoader over it yields each
    batch's indices beside it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # the map-style sets of this package have a length

    def __getitem__(self, index: int) -> tuple[object, ...]:
        return (*self.dataset[index], index)
