"""The model zoo (torchzebra/models): the project's ResNets and VGGs and torchvision's classifiers by name."""

import pytest
import torch

from torchzebra.models import build_model


@pytest.mark.parametrize("name, options, channels, size", [
    ("resnet18", {"stem": "imagenet", "width": 8}, 3, 64),
    ("resnet18", {"stem": "cifar", "width": 8}, 1, 32),
    ("resnet20", {}, 3, 32),
    ("resnet56", {"width": 4}, 3, 32),
    ("vgg11", {"width": 16}, 1, 32),
    ("vgg16", {"width": 16}, 3, 32),
    ("torchvision:resnet50", {}, 1, 32),
    ("torchvision:mobilenet_v2", {}, 3, 32),
])
def test_model_zoo(name, options, channels, size):
    model = build_model(name, 7, channels, **options).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_model_zoo_errors():
    with pytest.raises(ValueError, match="model 'resnet19' is unknown"):
        build_model("resnet19", 10, 3)
    with pytest.raises(ValueError, match="torchvision classifiers are"):
        build_model("torchvision:nonsense", 10, 3)
    with pytest.raises(ValueError, match="stem='tiny' is invalid"):
        build_model("resnet18", 10, 3, stem="tiny")
