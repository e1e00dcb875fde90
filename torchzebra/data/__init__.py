"""Data sets read from local files; nothing is downloaded."""

from .errors import DatasetError
from .fashion_mnist import FashionMNIST

__all__ = ["DatasetError", "FashionMNIST"]
