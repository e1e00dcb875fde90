"""Builders of small data-set trees in the real on-disk layouts (real file formats, few images), the
settings of the tiny training run the tests share (``TinyRun``, the ``tiny_run`` fixture of conftest.py), and a
training interrupted in its second epoch (``interrupted_in_epoch_two``, for the resume tests)."""

from __future__ import annotations

import contextlib
import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from torchzebra.data.fashion_mnist import FILES


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fashion_mnist_tree(root: Path, train: int = 12, test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for is_train, count in ((True, train), (False, test)):
        images_name, labels_name = FILES[is_train]
        write_idx(root / images_name, rng.integers(0, 256, (count, 28, 28)))
        write_idx(root / labels_name, np.arange(count) % 10)
    return root


def cifar_tree(root: Path, classes: int = 10, per_batch: int = 6) -> Path:
    rng = np.random.default_rng(1)
    if classes == 10:
        folder, key = root / "cifar-10-batches-py", b"labels"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        folder, names, key = root / "cifar-100-python", ["train", "test"], b"fine_labels"
    folder.mkdir(parents=True)
    for name in names:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 key: [int(i) % classes for i in range(per_batch)], b"batch_label": name.encode()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return root


def _image(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def tiny_imagenet_tree(root: Path, wnids=("n01443537", "n01629819", "n01641577"), per_class: int = 3) -> Path:
    """``tiny-imagenet-200/`` as the archive unzips: wnids.txt, words.txt, train/<wnid>/images/*.JPEG with
    <wnid>_boxes.txt, val/images/*.JPEG with val_annotations.txt (two validation images per class)."""
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{wnid}\tclass {i}\n" for i, wnid in enumerate(wnids)))
    seed = 0
    for wnid in wnids:
        for i in range(per_class):
            _image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 64, seed := seed + 1)
        boxes = "".join(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(per_class))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(boxes)
    lines = []
    for i, wnid in enumerate(wnids * 2):
        _image(base / "val" / "images" / f"val_{i}.JPEG", 64, seed := seed + 1)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def image_folder_tree(root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 40) -> Path:
    seed = 100
    for split in ("train", "val"):
        for name in classes:
            for i in range(per_class):
                _image(root / split / name / f"{i}.png", size, seed := seed + 1)
    return root


TINY_SETTINGS = (
    "model.options={stem: cifar, width: 4}", "data.name=synthetic", "data.channels=1", "data.length=512",
    "data.train_subset=256", "data.test_subset=128", "data.batch_size=64", "data.workers=0",
    "train.epochs=1", "finetune.epochs=1", "device=cpu", "train.eval_every=1", "finetune.eval_every=1",
    "data.loader=auto",  # synthetic data: a DataLoader gives item i the same image in every process
)


@dataclass(frozen=True)
class TinyRun:
    """A run small enough for a test: the quick preset with a width-4 ResNet-18 (CIFAR stem), one epoch (and one
    of fine-tuning) over 256 synthetic grey 32x32 images, 128 to test, batches of 64, loaded in-process on the
    CPU. Extra settings come last and win; a test about the real data set adds ``data.name=fashion-mnist``."""

    settings: tuple[str, ...] = TINY_SETTINGS

    def overrides(self, *extra: str) -> list[str]:
        """The settings as ``load_config`` overrides."""
        return [*self.settings, *extra]

    def config(self, *extra: str):
        """The quick preset with these settings: a RunConfig."""
        from torchzebra.config import load_config

        return load_config("quick", overrides=self.overrides(*extra))

    def args(self, *extra: str) -> list[str]:
        """The settings as ``zebra`` arguments: ``--set`` each, then ``--quiet``."""
        return [arg for setting in self.overrides(*extra) for arg in ("--set", setting)] + ["--quiet"]


@contextlib.contextmanager
def interrupted_in_epoch_two(monkeypatch):
    """A training inside stops with KeyboardInterrupt at its second evaluation (epoch two); evaluation is real again
    afterwards."""
    from torchzebra.training import trainer as trainer_module

    real_evaluate = trainer_module.evaluate
    calls = {"n": 0}

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", interrupt_in_epoch_two)
    try:
        yield
    finally:
        monkeypatch.setattr(trainer_module, "evaluate", real_evaluate)
