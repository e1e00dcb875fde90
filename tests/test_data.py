"""Every loader on a small fixture tree in its real layout, and the errors for missing or broken data."""

import os
import pickle
import shutil

import pytest
import torch
from fixtures import cifar_tree, fashion_mnist_tree, image_folder_tree, tiny_imagenet_tree

from torchzebra.config import DataSection
from torchzebra.data import CIFAR, DatasetError, FashionMNIST, Synthetic, build_datasets
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


# data.loader: batches made on the device (here the CPU) against the DataLoader path they replace.

def _batches(dataset, loader, shuffle=True, seed=3, world=None, batch_size=4, indexed=False, **settings):
    from torchzebra.training.building import make_loader

    return list(make_loader(dataset, batch_size, DataSection(loader=loader, **settings), torch.device("cpu"), shuffle,
                        seed, world, indexed))


def _fashion(tmp_path, augment, **settings):
    return build_datasets(DataSection("fashion-mnist", fashion_mnist_tree(tmp_path, 50, 30), augment=augment,
                                      **settings))


def test_loader_auto_is_workers_on_cpu_and_typos_are_refused(tmp_path):
    from torch.utils.data import DataLoader

    from torchzebra.config import ConfigError, load_config
    from torchzebra.data import loader_kind
    from torchzebra.training.building import make_loader

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (loader_kind("auto", cpu), loader_kind("auto", cuda), loader_kind("workers", cuda)) == (
        "workers", "device", "workers")
    train, _, _ = _fashion(tmp_path, True)
    loader = make_loader(train, 4, DataSection(), cpu, True, 0)  # the default, auto: today's DataLoader on a CPU
    assert isinstance(loader, DataLoader) and not loader.persistent_workers and not loader.pin_memory
    assert load_config("quick").data.loader == "device"  # the quick preset's choice: no loader process on 2 cores
    with pytest.raises(ConfigError, match="data.loader='gpu' is invalid: expected 'auto' or 'workers' or 'device'"):
        load_config("quick", overrides=["data.loader=gpu"])


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_device_batches_are_the_dataloader_s_samples_on_every_rank(tmp_path, ranks):
    from torchzebra.training.distributed import World

    train, _, _ = _fashion(tmp_path, False, train_subset=47)  # a Subset: positions map through its indices
    for rank in range(ranks):
        world = World(rank, ranks)
        workers, device = _batches(train, "workers", world=world), _batches(train, "device", world=world)
        assert len(device) == len(workers) == 47 // ranks // 4
        for (a, x), (b, y) in zip(workers, device):  # without augmentation: equal, in the same order
            assert torch.equal(a, b) and torch.equal(x, y)


def test_device_eval_batches_equal_the_dataloader_s_exactly(tmp_path):
    from torchzebra.training.distributed import World, shard

    _, test, _ = _fashion(tmp_path, True)
    cifar_tree(tmp_path / "cifar")
    _, resized, _ = build_datasets(DataSection("cifar10", tmp_path / "cifar", size=36))  # resize + centre crop
    for dataset in (test, shard(test, World(1, 2)), resized):
        workers, device = _batches(dataset, "workers", False), _batches(dataset, "device", False)
        assert len(workers) == len(device) and len(device[-1][1]) == len(workers[-1][1])
        for (a, x), (b, y) in zip(workers, device):
            assert b.dtype == torch.float32 and torch.equal(a, b) and torch.equal(x, y)


def _crops(image, pad, fill):
    """Every zero-padded random crop of ``image``, flipped or not (``fill``: the normalised zero)."""
    size = image.shape[-1]
    padded = torch.nn.functional.pad(image, (pad,) * 4, value=fill)
    crops = [padded[:, i:i + size, j:j + size] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return crops + [crop.flip(-1) for crop in crops]


def test_device_augmentation_crops_and_flips_each_image_and_repeats_for_a_seed(tmp_path):
    from torchvision.transforms.v2 import functional as TF

    from torchzebra.data import fashion_mnist

    train, _, _ = _fashion(tmp_path, True)
    plain, _, _ = _fashion(tmp_path, False)
    fill = TF.normalize(torch.zeros(1, 1, 1), fashion_mnist.MEAN, fashion_mnist.STD).item()
    augmented, reference = _batches(train, "device"), _batches(plain, "workers")
    assert len(augmented) == len(reference) == 12
    for (images, labels), (originals, expected) in zip(augmented, reference):
        assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32 and torch.equal(labels, expected)
        for image, original in zip(images, originals):
            assert any(torch.equal(image, crop) for crop in _crops(original, 2, fill))
    shifted = torch.cat([images for images, _ in augmented]) != torch.cat([images for images, _ in reference])
    assert shifted.any()  # augmentation happened
    again, other = _batches(train, "device"), _batches(train, "device", seed=4)
    assert all(torch.equal(a, b) and torch.equal(x, y) for (a, x), (b, y) in zip(augmented, again))
    assert not torch.equal(augmented[0][0], other[0][0])


def test_synthetic_batches_are_generated_on_the_device_per_seed():
    data = Synthetic(30, (3, 8, 8), 5, seed=1)
    batches, again, other = _batches(data, "device"), _batches(data, "device"), _batches(data, "device", seed=4)
    assert len(batches) == len(_batches(data, "workers")) == 7
    for (images, labels), (same, same_labels) in zip(batches, again):
        assert images.shape == (4, 3, 8, 8) and images.dtype == torch.float32 and 0 <= images.min() <= images.max() < 1
        assert labels.dtype == torch.int64 and 0 <= labels.min() <= labels.max() < 5
        assert torch.equal(images, same) and torch.equal(labels, same_labels)
    assert not torch.equal(batches[0][0], other[0][0])


def test_image_files_keep_a_dataloader_with_persistent_workers(tmp_path):
    from torch.utils.data import DataLoader

    from torchzebra.training.building import make_loader

    image_folder_tree(tmp_path)
    train, _, _ = build_datasets(DataSection("imagefolder", tmp_path, size=32))
    section = DataSection("imagefolder", tmp_path, size=32, loader="device", workers=1)
    loader = make_loader(train, 2, section, torch.device("cpu"), True, 0)
    assert isinstance(loader, DataLoader) and loader.persistent_workers and loader.prefetch_factor == 4
    assert [len(labels) for _, labels in loader] == [2, 2, 2]


@pytest.mark.slow  # trains on Fashion-MNIST: the device loader must deliver data a model can learn from
def test_training_with_the_device_loader_runs_end_to_end(tmp_path, tiny_run):
    from torchzebra.training import train

    config = tiny_run.config("data.name=fashion-mnist", "data.train_subset=512", "data.batch_size=32",
                             "data.loader=device", "train.lr=0.1")
    result = train(config, tmp_path / "run", progress=False)
    assert [row["epoch"] for row in result.metrics] == [1] and result.metrics[0]["images_per_s"] > 0
    assert result.report.images == 128 and result.report.accuracy > 0.15  # ten classes: chance is 0.1


@pytest.mark.parametrize("loader", ["workers", "device"])
def test_indexed_batches_name_the_items_they_hold(tmp_path, loader):
    from torchzebra.training.distributed import World

    train, _, _ = _fashion(tmp_path, False, train_subset=47)
    synthetic = Synthetic(30, (1, 8, 8), 5, seed=1)  # device batches of it are fresh draws: indexed, it keeps items
    for dataset, world in ((train, None), (train, World(1, 2)), (synthetic, None)):
        plain, indexed = _batches(dataset, loader, world=world), _batches(dataset, loader, world=world, indexed=True)
        assert len(indexed) == len(plain) > 0
        for (images, labels, index), (same, same_labels) in zip(indexed, plain):
            assert index.dtype == torch.int64 and len(index) == len(labels)
            assert torch.equal(torch.stack([dataset[i][0] for i in index.tolist()]), images)
            assert torch.equal(torch.as_tensor([int(dataset[i][1]) for i in index.tolist()]), labels)
            if dataset is train:  # the same batches as without indices, in the same order
                assert torch.equal(images, same) and torch.equal(labels, same_labels)
