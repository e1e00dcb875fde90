"""measure() and TrafficReport: traffic per layer = per-map bytes x (1 write + reads), totals, outputs."""

import json

import pytest
import torch

import torchzebra as tz
from torchzebra.core import FORMATS, bits_to_bytes, map_bits


def test_residual_map_is_read_twice_and_bytes_match_map_bits(residual_net):
    prepared = tz.prepare(residual_net, tz.ZebraConfig(block_size=4, threshold=0.1))
    first, second = (layer for _, layer in tz.zebra_layers(prepared))
    assert (first.consumers, second.consumers) == (2, 1)
    x = torch.randn(5, 1, 7, 7)
    captured = {}
    for name, layer in tz.zebra_layers(prepared):
        layer.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
    labels = torch.tensor([0, 1, 2, 0, 1])
    report = tz.measure(prepared, [(x[:3], labels[:3]), (x[3:], labels[3:])], bits=8)
    prepared.eval()
    outputs = prepared(x)
    for row in report.layers:
        accesses = 1 + row.consumers
        per_map = map_bits(captured[row.name], 4, 8)
        for fmt in FORMATS:
            assert row.bytes[fmt] == accesses * int(bits_to_bytes(per_map[fmt]).sum())
    assert report.images == 5 and report.layers[0].shape == (4, 7, 7)
    assert report.accuracy == pytest.approx((outputs.argmax(1) == labels).float().mean().item())
    total = sum(r.bytes["zebra"] for r in report.layers)
    assert report.reduction("zebra") == pytest.approx(1 - total / sum(r.bytes["dense"] for r in report.layers))
    assert report.reduction("dense") == 0.0


def test_report_outputs(residual_net, tmp_path):
    report = tz.measure(tz.prepare(residual_net), [torch.randn(2, 1, 8, 8)], bits=16)
    assert report.accuracy is None and report.bits == 16
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data["reduction"]) == set(FORMATS) and len(data["layers"]) == 2
    report.to_csv(tmp_path / "out" / "traffic.csv")
    lines = (tmp_path / "out" / "traffic.csv").read_text().splitlines()
    assert lines[0].startswith("layer,shape,block_size") and lines[1].startswith("relu,4x8x8,4")
    assert len(lines) == 3
    text = str(report)
    assert "relu:1" in text and "total" in text and "16 bits" in text
    with pytest.raises(ValueError, match="format='huffman' is invalid"):
        report.reduction("huffman")


def test_measure_restores_mode_and_detaches_tallies(residual_net):
    prepared = tz.prepare(residual_net).train()
    tz.measure(prepared, [torch.randn(1, 1, 8, 8)], max_batches=1)
    assert prepared.training
    assert all(layer.tally is None for _, layer in tz.zebra_layers(prepared))


def test_measure_rejects_bad_batches_and_bits(residual_net):
    prepared = tz.prepare(residual_net)
    with pytest.raises(ValueError, match="tensor or \\(inputs, labels\\)"):
        tz.measure(prepared, [{"x": 1}])
    with pytest.raises(ValueError, match="bits=3.5 is invalid"):
        tz.measure(prepared, [torch.randn(1, 1, 8, 8)], bits=3.5)


def test_masking_raises_zebra_reduction(residual_net):
    x = [torch.randn(4, 1, 8, 8)]
    low = tz.measure(tz.prepare(residual_net), x)
    high = tz.measure(tz.prepare(residual_net, tz.ZebraConfig(threshold=0.3)), x)
    assert high.reduction("zebra") > low.reduction("zebra")
    assert high.total_bytes("dense") == low.total_bytes("dense")
