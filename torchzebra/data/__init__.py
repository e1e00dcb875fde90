"""Data sets read from local files (nothing is downloaded), with per-data-set augmentation."""

from .cifar import CIFAR
from .device import DeviceBatches, Indexed, batch_maker, loader_kind
from .errors import DatasetError
from .fashion_mnist import FashionMNIST
from .images import image_folder, tiny_imagenet
from .registry import NAMES, DataSettings, DataSpec, build_datasets, check_name
from .synthetic import Synthetic

__all__ = ["CIFAR", "NAMES", "DataSettings", "DataSpec", "DatasetError", "DeviceBatches", "FashionMNIST", "Indexed",
           "Synthetic", "batch_maker", "build_datasets", "check_name", "image_folder", "loader_kind", "tiny_imagenet"]
