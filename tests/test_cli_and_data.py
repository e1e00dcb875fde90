"""The zebra CLI and the Fashion-MNIST reader, on small IDX fixture files in the real layout."""

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest

from torchzebra.cli import main
from torchzebra.data import DatasetError, FashionMNIST
from torchzebra.data.fashion_mnist import FILES


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fmnist_root(tmp_path):
    rng = np.random.default_rng(0)
    for train, count in ((True, 12), (False, 10)):
        images_name, labels_name = FILES[train]
        write_idx(tmp_path / images_name, rng.integers(0, 256, (count, 28, 28)))
        write_idx(tmp_path / labels_name, np.arange(count) % 10)
    return tmp_path


def test_fashion_mnist_fixture_loads_padded(fmnist_root):
    data = FashionMNIST(fmnist_root, train=False)
    image, label = data[3]
    assert len(data) == 10 and image.shape == (1, 32, 32) and label.item() == 3
    assert len(FashionMNIST(fmnist_root, train=True, size=28)) == 12


def test_missing_dataset_names_path_and_fix(tmp_path):
    with pytest.raises(DatasetError, match=f"looked in {tmp_path}.*apt-get install -y dataset-fashion-mnist"):
        FashionMNIST(tmp_path)


def test_truncated_and_corrupt_files_are_named(fmnist_root):
    images = fmnist_root / FILES[False][0]
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DatasetError, match=f"{images}.*truncated or corrupt"):
        FashionMNIST(fmnist_root, train=False)
    images.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=f"{images} is not a readable gzip IDX file"):
        FashionMNIST(fmnist_root, train=False)


def test_cli_measure_prints_table_and_writes_outputs(fmnist_root, tmp_path, capsys):
    rc = main(["measure", "--data-root", str(fmnist_root), "--width", "4", "--threshold", "0.1",
               "--csv", str(tmp_path / "t.csv"), "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "layer1.0.relu:1" in out and "total" in out
    assert (tmp_path / "t.csv").read_text().count("\n") == 18 and (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--block-size", "0"], "block_size=0 is invalid"),
        (["--threshold", "nan"], "threshold=nan is invalid"),
        (["--bits", "0"], "bits=0 is invalid"),
        (["--score", "median"], "score='median' is invalid"),
    ],
)
def test_cli_bad_values_are_one_line_errors(fmnist_root, capsys, args, message):
    assert main(["measure", "--data-root", str(fmnist_root), "--width", "4", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "torchzebra.cli", "measure", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--block-size" in result.stdout
