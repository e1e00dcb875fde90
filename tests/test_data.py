"""Every loader on a small fixture tree in its real layout, and the errors for missing or broken data."""

import os
import pickle
import shutil

import pytest
import torch

from fixtures import cifar_tree, fashion_mnist_tree, image_folder_tree, tiny_imagenet_tree
from torchzebra.data import CIFAR, DataSection, DatasetError, FashionMNIST, Synthetic, build_datasets
from torchzebra.data.fashion_mnist import FILES


def test_fashion_mnist(tmp_path):
    root = fashion_mnist_tree(tmp_path)
    train, test, spec = build_datasets(DataSection("fashion-mnist", root))
    image, label = test[3]
    assert (len(train), len(test)) == (12, 10) and image.shape == (1, 32, 32) and label.item() == 3
    assert (spec.classes, spec.channels, spec.size) == (10, 1, 32)
    assert len(FashionMNIST(root, train=True, size=28)) == 12


def test_fashion_mnist_missing_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetError, match=f"looked in {tmp_path}.*apt-get install -y dataset-fashion-mnist"):
        build_datasets(DataSection("fashion-mnist", tmp_path))


def test_fashion_mnist_truncated_and_corrupt_files_are_named(tmp_path):
    root = fashion_mnist_tree(tmp_path)
    import gzip

    images = root / FILES[False][0]
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-100]))
    with pytest.raises(DatasetError, match=f"{images}.*truncated or corrupt"):
        FashionMNIST(root, train=False)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=f"{images} is not a readable gzip IDX file"):
        FashionMNIST(root, train=False)


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar(tmp_path, classes):
    cifar_tree(tmp_path, classes)
    train, test, spec = build_datasets(DataSection(f"cifar{classes}", tmp_path))
    assert len(train) == (30 if classes == 10 else 6) and len(test) == 6
    image, label = train[1]
    assert image.shape == (3, 32, 32) and label.item() == 1 and spec.classes == classes


def test_cifar_missing_and_hostile_pickle(tmp_path):
    with pytest.raises(DatasetError, match="CIFAR-10 not found: looked in .*cifar-10-batches-py.*tar -xzf"):
        CIFAR(tmp_path, 10)
    cifar_tree(tmp_path, 10)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/torchzebra-pwned",))

    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DatasetError, match="test_batch is not a readable CIFAR python batch.*refusing to load"):
        CIFAR(tmp_path, 10, train=False)
    assert not os.path.exists("/tmp/torchzebra-pwned")


def test_tiny_imagenet(tmp_path):
    tiny_imagenet_tree(tmp_path)
    train, test, spec = build_datasets(DataSection("tiny-imagenet", tmp_path))
    assert (len(train), len(test), spec.classes, spec.size) == (9, 6, 3, 64)
    image, label = test[4]
    assert image.shape == (3, 64, 64) and label.item() == 1
    train32, _, _ = build_datasets(DataSection("tiny-imagenet", tmp_path, size=32))
    assert train32[0][0].shape == (3, 32, 32)


def test_tiny_imagenet_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="Tiny-ImageNet not found: looked for .*wnids.txt.*unzip"):
        build_datasets(DataSection("tiny-imagenet", tmp_path))
    tiny_imagenet_tree(tmp_path)
    broken = tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    _, test, _ = build_datasets(DataSection("tiny-imagenet", tmp_path))
    with pytest.raises(DatasetError, match=f"cannot read image {broken}"):
        test[0]
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn99999999\n")
    with pytest.raises(DatasetError, match="val_annotations.txt line 1 is malformed"):
        build_datasets(DataSection("tiny-imagenet", tmp_path))


def test_image_folder(tmp_path):
    image_folder_tree(tmp_path)
    train, test, spec = build_datasets(DataSection("imagefolder", tmp_path, size=32))
    assert (len(train), len(test), spec.classes) == (6, 6, 2)
    assert train[5][0].shape == (3, 32, 32) and train[5][1].item() == 1
    with pytest.raises(DatasetError, match="no train folder in .*needs .*/train/<class>/<image>"):
        build_datasets(DataSection("imagefolder", tmp_path / "train"))
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DatasetError, match="no val or test folder"):
        build_datasets(DataSection("imagefolder", tmp_path))


def test_synthetic_is_deterministic_and_unknown_name_is_an_error():
    data = Synthetic(8, (3, 16, 16), 5, seed=1)
    assert torch.equal(data[3][0], data[3][0]) and not torch.equal(data[3][0], data[4][0])
    with pytest.raises(DatasetError, match="data set 'mnist' is unknown: use one of fashion-mnist"):
        build_datasets(DataSection("mnist"))


def test_subsets_are_seeded(tmp_path):
    root = fashion_mnist_tree(tmp_path)
    a, _, _ = build_datasets(DataSection("fashion-mnist", root, train_subset=5, augment=False))
    b, _, _ = build_datasets(DataSection("fashion-mnist", root, train_subset=5, augment=False))
    assert len(a) == 5 and a.indices == b.indices
