"""Image-file data sets: Tiny-ImageNet's ``tiny-imagenet-200`` layout and any ImageFolder tree."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as TF

from .errors import DatasetError

TINY_HINT = (
    "download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip on a machine with "
    "network access and unzip it so that {root} holds wnids.txt, train/ and val/"
)


def load_image(path: Path) -> torch.Tensor:
    """An RGB image file as a ``(3, H, W)`` float tensor in [0, 1]; a corrupt file is a DatasetError naming it."""
    try:
        with Image.open(path) as image:
            return TF.to_dtype(TF.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DatasetError(f"cannot read image {path}: {error}; replace or delete the file") from error


class ImageList(Dataset):
    """(path, label) pairs read lazily through ``load_image`` and ``transform``."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform=None) -> None:
        self.samples, self.classes, self.transform = samples, classes, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.samples[index]
        image = load_image(path)
        return (self.transform(image) if self.transform else image), torch.tensor(label)


def tiny_imagenet(root: str | Path, train: bool, transform: Callable | None = None) -> ImageList:
    """Tiny-ImageNet: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val_annotations.txt``."""
    root = Path(root)
    if (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    wnids_file = root / "wnids.txt"
    if not wnids_file.is_file():
        raise DatasetError(f"Tiny-ImageNet not found: looked for {wnids_file}; " + TINY_HINT.format(root=root))
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    index = {wnid: i for i, wnid in enumerate(wnids)}
    samples: list[tuple[Path, int]] = []
    if train:
        for wnid in wnids:
            folder = root / "train" / wnid / "images"
            if not folder.is_dir():
                raise DatasetError(f"Tiny-ImageNet is incomplete: {folder} is missing; " + TINY_HINT.format(root=root))
            samples += [(path, index[wnid]) for path in sorted(folder.glob("*.JPEG"))]
    else:
        annotations = root / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise DatasetError(f"Tiny-ImageNet is incomplete: {annotations} is missing; " + TINY_HINT.format(root=root))
        for number, line in enumerate(annotations.read_text().splitlines(), 1):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DatasetError(
                    f"{annotations} line {number} is malformed: expected '<file>\\t<wnid>\\t...' with a wnid "
                    f"listed in wnids.txt, got {line[:80]!r}"
                )
            samples.append((root / "val" / "images" / fields[0], index[fields[1]]))
    if not samples:
        raise DatasetError(f"Tiny-ImageNet in {root} has no {'train' if train else 'val'} images")
    return ImageList(samples, wnids, transform)


def image_folder(root: str | Path, train: bool, transform: Callable | None = None) -> ImageList:
    """An ImageFolder tree: ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test/``)."""
    root = Path(root)
    layout = f"{root}/train/<class>/<image> and {root}/val/<class>/<image>"
    if not root.is_dir():
        found = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"ImageFolder data set not found: {root} {found}; "
                           f"set data.root to a folder holding {layout}")
    candidates = ["train"] if train else ["val", "test"]
    split = next((root / name for name in candidates if (root / name).is_dir()), None)
    if split is None:
        raise DatasetError(
            f"no {' or '.join(candidates)} folder in {root}: an ImageFolder data set needs {layout}"
        )
    classes = sorted(d.name for d in split.iterdir() if d.is_dir())
    samples = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((split / name).rglob("*"))
        if path.suffix.lower() in IMG_EXTENSIONS
    ]
    if not samples:
        raise DatasetError(f"{split} holds no images in class sub-folders (extensions {', '.join(IMG_EXTENSIONS)})")
    return ImageList(samples, classes, transform)
