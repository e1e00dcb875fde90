"""The project's own models, and a builder that also adapts any torchvision classifier."""

from .resnet import ResNet18
from .resnet_cifar import CifarResNet
from .vgg import VGG
from .zoo import OWN, build_model

__all__ = ["OWN", "VGG", "CifarResNet", "ResNet18", "build_model"]
