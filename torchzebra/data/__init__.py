"""Data sets read from local files (nothing is downloaded), with per-data-set augmentation."""

from .cifar import CIFAR
from .errors import DatasetError
from .fashion_mnist import FashionMNIST
from .images import image_folder, tiny_imagenet
from .registry import NAMES, DataSection, DataSpec, build_datasets
from .synthetic import Synthetic

__all__ = ["CIFAR", "NAMES", "DataSection", "DataSpec", "DatasetError", "FashionMNIST", "Synthetic", "build_datasets",
           "image_folder", "tiny_imagenet"]
