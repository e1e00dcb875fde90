"""Build a model by name: the project's own, any torchvision or timm classifier adapted to the data, or the user's
own builder (``module:function``)."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

import torchvision
from torch import nn

from ..errors import ZebraError
from .resnet import ResNet18
from .resnet_cifar import CifarResNet
from .vgg import VGG

OWN: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda classes, channels, width=64, stem="cifar": ResNet18(classes, channels, width, stem),
    "resnet20": lambda classes, channels, width=16: CifarResNet(20, classes, channels, width),
    "resnet56": lambda classes, channels, width=16: CifarResNet(56, classes, channels, width),
    "vgg11": lambda classes, channels, width=64: VGG(11, classes, channels, width),
    "vgg16": lambda classes, channels, width=64: VGG(16, classes, channels, width),
}


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d by one with ``in_channels`` inputs (same geometry, fresh weights)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != in_channels:
                    setattr(parent, name, nn.Conv2d(
                        in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                        child.dilation, bias=child.bias is not None,
                    ))
                return


def _did_you_mean(prefix: str, name: str, known: list[str]) -> str:
    """`` (did you mean <prefix>:<a>, <prefix>:<b>?)`` for the known names closest to ``name``, or nothing."""
    close = difflib.get_close_matches(name, known, n=3)
    return f" (did you mean {', '.join(f'{prefix}:{c}' for c in close)}?)" if close else ""


def _torchvision(name: str) -> Callable[..., nn.Module]:
    """The builder of ``torchvision:<name>``: random init, ``classes`` outputs, first conv adapted to ``channels``."""
    tv_name = name.split(":", 1)[1]
    known = torchvision.models.list_models(module=torchvision.models)
    if tv_name not in known:
        raise ZebraError(f"model {name!r} is unknown{_did_you_mean('torchvision', tv_name, known)}: torchvision "
                         "classifiers are listed by torchvision.models.list_models()")

    def build(classes: int, channels: int, **options: Any) -> nn.Module:
        model = torchvision.models.get_model(tv_name, weights=None, num_classes=classes, **options)
        _adapt_first_conv(model, channels)
        return model

    return build


def _timm(name: str) -> Callable[..., nn.Module]:
    """The builder of ``timm:<name>``: random init (nothing downloaded), ``classes`` outputs, ``channels`` inputs."""
    try:
        import timm
    except ImportError as error:
        raise ZebraError(f"model {name!r} needs timm, which is not installed: pip install timm") from error
    timm_name = name.split(":", 1)[1]
    if not timm.is_model(timm_name):
        raise ZebraError(f"model {name!r} is unknown to timm {timm.__version__}"
                         f"{_did_you_mean('timm', timm_name, timm.list_models())}: timm.list_models() lists its models")
    return lambda classes, channels, **options: timm.create_model(
        timm_name, pretrained=False, num_classes=classes, in_chans=channels, **options)


def _load_module(name: str, where: str):
    """The module ``where`` names: a ``.py`` file's path, or a module importable from ``sys.path``."""
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(where).stem, where)
        if not Path(where).is_file() or spec is None or spec.loader is None:
            raise ZebraError(f"model {name!r}: the file {where} does not exist")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as error:
        raise ZebraError(f"model {name!r}: cannot import {error.name!r}: put the folder that holds {where} on "
                         "PYTHONPATH, or name its file (path/to/file.py:function)") from error


def _user(name: str) -> Callable[..., nn.Module]:
    """The builder of ``module:function`` or ``path/to/file.py:function``: the user's function, called with the
    number of classes and input channels, then ``model.options`` as keywords."""
    where, _, function = name.rpartition(":")
    builder = getattr(_load_module(name, where), function, None)
    if not callable(builder):
        raise ZebraError(f"model {name!r}: {where} has no function {function!r}")
    return builder


def build_model(name: str, num_classes: int, in_channels: int, **options: Any) -> nn.Module:
    """``name`` is one of ``OWN``, ``torchvision:<name>`` or ``timm:<name>`` (random init, inputs and classes
    adapted), or ``module:function`` / ``path/to/file.py:function``: the user's builder."""
    if name.startswith("torchvision:"):
        builder = _torchvision(name)
    elif name.startswith("timm:"):
        builder = _timm(name)
    elif name in OWN:
        builder = OWN[name]
    elif ":" in name:
        builder = _user(name)
    else:
        raise ZebraError(f"model {name!r} is unknown: use one of {', '.join(OWN)}, torchvision:<name>, timm:<name> "
                         "or module:function (your own builder)")
    try:
        return builder(num_classes, in_channels, **options)
    except TypeError as error:
        raise ZebraError(f"model {name!r} does not take the option(s) {sorted(options)} ({error}): set model.options "
                         "to arguments it takes, or clear them with model.options={}") from error
