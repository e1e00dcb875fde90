"""Build the train and test splits of a data set by name, with its augmentation and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from . import fashion_mnist
from .cifar import CIFAR
from .cifar import STATS as CIFAR_STATS
from .errors import DatasetError
from .images import image_folder, tiny_imagenet
from .synthetic import Synthetic

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
NAMES = ("fashion-mnist", "cifar10", "cifar100", "tiny-imagenet", "imagefolder", "synthetic")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about a data set."""

    name: str
    classes: int
    channels: int
    size: int


class DataSettings(Protocol):
    """What ``build_datasets`` reads of a run's ``data`` section (``config.DataSection``)."""

    name: str
    root: str | None
    size: int | None
    augment: bool
    train_subset: int | None
    test_subset: int | None
    classes: int
    channels: int
    length: int


def check_name(name: str) -> None:
    """``name`` must be a data set that ``build_datasets`` builds (the run config checks it when it is read)."""
    if name not in NAMES:
        raise DatasetError(f"data set {name!r} is unknown: use one of {', '.join(NAMES)}")


def _transforms(stats, size: int, augment: bool, pad: int, resize: bool) -> tuple[v2.Transform, v2.Transform]:
    mean, std = stats
    normalise = v2.Normalize(mean, std)
    fit = [v2.Resize(size * 8 // 7, antialias=True), v2.CenterCrop(size)] if resize else []
    train = fit + ([v2.RandomCrop(size, padding=pad), v2.RandomHorizontalFlip()] if augment else []) + [normalise]
    return v2.Compose(train), v2.Compose(fit + [normalise])


def _subset(dataset: Dataset, count: int | None, seed: int) -> Dataset:
    """``count`` items picked at random (fixed by ``seed``); None or 0 keeps the data set whole."""
    if not count or count >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:count].tolist())


def build_datasets(section: DataSettings, seed: int = 0) -> tuple[Dataset, Dataset, DataSpec]:
    """(train split, test split, spec) of the data set ``section`` names, read from its root; nothing is
    downloaded. ``seed`` picks the subsets; ``classes``, ``channels`` and ``length`` shape ``synthetic`` only."""
    train, test, spec = _splits(section, seed)
    return _subset(train, section.train_subset, seed), _subset(test, section.test_subset, seed + 1), spec


def _splits(section: DataSettings, seed: int) -> tuple[Dataset, Dataset, DataSpec]:
    name, root, size, augment = section.name, section.root, section.size, section.augment
    check_name(name)
    if name == "fashion-mnist":
        size = size or 32
        train_tf, test_tf = _transforms((fashion_mnist.MEAN, fashion_mnist.STD), size, augment, 2, False)
        data_root = root or fashion_mnist.DEFAULT_ROOT
        train = fashion_mnist.FashionMNIST(data_root, True, size, train_tf)
        test = fashion_mnist.FashionMNIST(data_root, False, size, test_tf)
        spec = DataSpec(name, fashion_mnist.CLASSES, 1, size)
    elif name in ("cifar10", "cifar100"):
        count = int(name[5:])
        size = size or 32
        if root is None:
            raise DatasetError(f"{name} needs data.root: the folder that holds cifar-{count}-python's batch folder")
        train_tf, test_tf = _transforms(CIFAR_STATS[count], size, augment, 4, size != 32)
        train, test = CIFAR(root, count, True, train_tf), CIFAR(root, count, False, test_tf)
        spec = DataSpec(name, count, 3, size)
    elif name in ("tiny-imagenet", "imagefolder"):
        if root is None:
            raise DatasetError(f"{name} needs data.root: the folder of the data set")
        size = size or (64 if name == "tiny-imagenet" else 224)
        load = tiny_imagenet if name == "tiny-imagenet" else image_folder
        resize = name == "imagefolder" or size != 64  # Tiny-ImageNet images are 64x64 already
        train_tf, test_tf = _transforms(IMAGENET_STATS, size, augment, size // 8, resize)
        train, test = load(root, True, train_tf), load(root, False, test_tf)
        spec = DataSpec(name, len(train.classes), 3, size)
    else:  # synthetic
        size = size or 32
        shape = (section.channels, size, size)
        train = Synthetic(section.length, shape, section.classes, seed)
        test = Synthetic(max(section.length // 4, 1), shape, section.classes, seed + 1)
        spec = DataSpec(name, section.classes, section.channels, size)
    return train, test, spec
