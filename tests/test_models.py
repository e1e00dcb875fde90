"""The model zoo (torchzebra/models): the project's ResNets and VGGs and torchvision's classifiers by name."""

import pytest
import torch
import torchvision
from torch import nn

from torchzebra.models import build_model

# The project's models for 7 classes, their parameters counted by hand from the papers' layouts (convolutions
# without bias, two per channel in a BatchNorm, a 1x1 conv and a BatchNorm as the shortcut of a block that changes
# shape, one linear layer with bias), for base width w, c input channels and a k x k stem:
#   ResNet-18:      c*k*k*w + 2724*w^2 + 150*w + 8w*7 + 7 (w=64, c=3, k=7, 1000 classes: 11,689,512, torchvision's
#                   resnet18);
#   ResNet-(6n+2):  9*c*w + 2w + n*(18w^2 + 4w) + (56w^2 + 12w) + (n-1)*(72w^2 + 8w) + (224w^2 + 24w)
#                   + (n-1)*(288w^2 + 16w) + 4w*7 + 7 (n=3, w=16, 10 classes, parameter-free shortcuts: 269,722, the
#                   usual count of the CIFAR ResNet-20);
#   VGG-BN:         the sum of 9*in*out + 2*out over its conv layers (each of the layout's widths times w/64), then
#                   the last width * 7 + 7.
# None: a torchvision classifier, whose oracle is torchvision's own builder with the same number of classes.
MODELS = [
    ("resnet18", {"stem": "imagenet", "width": 8}, 3, 64, 177_167),
    ("resnet18", {"stem": "cifar", "width": 8}, 1, 32, 176_063),
    ("resnet20", {}, 3, 32, 272_279),
    ("resnet56", {"width": 4}, 3, 32, 54_443),
    ("vgg11", {"width": 16}, 1, 32, 578_423),
    ("vgg16", {"width": 16}, 3, 32, 922_743),
    ("torchvision:resnet50", {}, 1, 32, None),
    ("torchvision:mobilenet_v2", {}, 3, 32, None),
]


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Every parameter and buffer of ``model``, in order, with its shape."""
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


def _torchvision_shapes(name: str, classes: int, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    """The shapes of torchvision's own ``name`` for ``classes``, its first convolution taking ``channels`` inputs."""
    shapes = _shapes(torchvision.models.get_model(name, weights=None, num_classes=classes))
    first = next(i for i, (_, shape) in enumerate(shapes) if len(shape) == 4)
    key, (out, _, height, width) = shapes[first]
    shapes[first] = (key, (out, channels, height, width))
    return shapes


def _weighted_layers(model: nn.Module) -> int:
    """Convolutions and linear layers, less the ResNets' 1x1 shortcuts: the depth a model's name gives."""
    return sum(isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
               for m in model.modules())


@pytest.mark.parametrize("name, options, channels, size, parameters", MODELS)
def test_model_zoo(name, options, channels, size, parameters):
    model = build_model(name, 7, channels, **options).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)
    if parameters is None:  # torchvision's classifier as torchvision builds it, but for its first conv's inputs
        assert _shapes(model) == _torchvision_shapes(name.removeprefix("torchvision:"), 7, channels)
        return
    assert sum(p.numel() for p in model.parameters()) == parameters
    depth = int(name.removeprefix("resnet").removeprefix("vgg"))
    # a ResNet's name counts its layers; a VGG here has one linear layer where the paper's has three
    assert _weighted_layers(model) == (depth if name.startswith("resnet") else depth - 2)


def test_model_zoo_errors():
    with pytest.raises(ValueError, match="model 'resnet19' is unknown"):
        build_model("resnet19", 10, 3)
    with pytest.raises(ValueError, match="torchvision classifiers are"):
        build_model("torchvision:nonsense", 10, 3)
    with pytest.raises(ValueError, match="stem='tiny' is invalid"):
        build_model("resnet18", 10, 3, stem="tiny")
