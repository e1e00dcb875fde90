"""ONNX export of prepared models (masks computed per input in onnxruntime) and TensorBoard logging."""

import numpy as np
import pytest
import torch
import torchvision

import torchzebra as tz
from torchzebra.export import to_onnx


@pytest.fixture
def ort():
    """onnxruntime for the ONNX tests, which skip without it (the TensorBoard tests run either way)."""
    return pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'torchzebra[onnx]'")


def _run(session, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.slow  # exports a full ResNet-18
def test_onnx_export_keeps_dynamic_masks_and_equal_outputs(tmp_path, ort):
    torch.manual_seed(0)
    model = tz.prepare(torchvision.models.resnet18(num_classes=10).eval(), tz.ZebraConfig(block_size=2, threshold=0.3))
    first, second = torch.randn(2, 3, 32, 32), 3 * torch.randn(5, 3, 32, 32)
    expected = [model(first), model(second)]
    path = to_onnx(model, first, tmp_path / "out" / "model.onnx")
    session = ort.InferenceSession(str(path))
    for x, want in zip((first, second), expected):  # another batch size and other values: other masks
        torch.testing.assert_close(_run(session, x), want, rtol=1e-4, atol=1e-4)
    # the model itself is untouched by the export (no traced tensors left in caches)
    assert torch.equal(model(first), expected[0]) and not isinstance(model(first), torch._subclasses.FakeTensor)


@pytest.mark.slow  # an ONNX export and onnxruntime sessions
def test_onnx_masks_follow_the_input(tmp_path, ort):
    """The zero-block pattern of an intermediate map changes with the input inside onnxruntime as in PyTorch."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x))

    model = tz.prepare(Net().eval(), tz.ZebraConfig(block_size=2, threshold=0.4))
    a, b = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    session = ort.InferenceSession(str(to_onnx(model, a, tmp_path / "net.onnx")))
    masks = [(_run(session, x) != 0) for x in (a, b)]
    assert torch.equal(masks[0], model(a) != 0) and torch.equal(masks[1], model(b) != 0)
    assert not torch.equal(masks[0], masks[1])


def test_onnx_export_failure_leaves_no_file(tmp_path, ort):
    with pytest.raises(ValueError, match="ONNX export of"):
        to_onnx(tz.prepare(torchvision.models.resnet18(num_classes=3)), torch.zeros(1, 3), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_logs_loss_accuracy_reduction_and_each_layer(tmp_path, tiny_run):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from torchzebra.training import train

    config = tiny_run.config("train.tensorboard=true")
    train(config, tmp_path / "run", masked=True, progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "test_acc", "lam", "zebra_zvc"} <= tags, tags
    assert any(tag.startswith("kept_blocks/layer1.0.relu") for tag in tags)
    assert (tmp_path / "run" / "metrics.csv").is_file()  # the CSV stays
    assert np.isfinite(events.Scalars("train_loss")[0].value)


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    from torchzebra.training.metrics import CsvLogger, JsonLogger, metric_loggers

    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ValueError, match=r"pip install 'torchzebra\[tensorboard\]'"):
        metric_loggers(tmp_path, tensorboard=True)
    assert [type(logger) for logger in metric_loggers(tmp_path, tensorboard=False)] == [CsvLogger, JsonLogger]


@pytest.mark.slow  # exports a full ResNet-18
def test_the_legacy_onnx_exporter_works_too(tmp_path, ort):
    """torch.onnx.export(..., dynamo=False) on ResNet-18 (maps of at most 16 blocks: no aten::kron)."""
    torch.manual_seed(0)
    model = tz.prepare(torchvision.models.resnet18(num_classes=10).eval(), tz.ZebraConfig(block_size=2, threshold=0.3))
    first, second = torch.randn(2, 3, 32, 32), 3 * torch.randn(2, 3, 32, 32)
    torch.onnx.export(model, (first,), str(tmp_path / "legacy.onnx"), dynamo=False)
    session = ort.InferenceSession(str(tmp_path / "legacy.onnx"))
    for x in (first, second):
        got, want = _run(session, x), model(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
