"""SCALE-Sim exports: rows that SCALE-Sim's own formulas turn into PyTorch's real shapes and MACs, depthwise rows
in its DP convention, and the table that links every row to the maps it reads and writes (with their bytes)."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch
import torchvision
import yaml
from torch import nn

import torchzebra as tz
from torchzebra.core import FORMATS
from torchzebra.export import (
    conv_layers,
    conv_maps_csv,
    density_yaml,
    layer_file_name,
    layout_csv,
    timeloop_document,
    timeloop_yaml,
    topology_csv,
    write_timeloop,
)
from torchzebra.models import ResNet18


class DepthwiseNet(nn.Module):
    """A stride-2 conv, a depthwise conv (multiplier 2) and a grouped one, with names unlike their sites'."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, 2, 1)
        self.act_in = nn.ReLU()
        self.b = nn.Conv2d(4, 8, 3, 2, 1, groups=4)
        self.bn = nn.BatchNorm2d(8)
        self.act_mid = nn.ReLU6()
        self.skip = nn.Identity()
        self.DPgroup = nn.Conv2d(8, 8, 1, 1, 0, groups=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_mid(self.bn(self.b(self.act_in(self.a(x)))))
        x = self.DPgroup(self.skip(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


MODELS = {
    "resnet18-cifar": (lambda: ResNet18(10, 1, 4, "cifar"), 32),
    "resnet18-imagenet": (lambda: ResNet18(10, 3, 4, "imagenet"), 36),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25), 40),
    "depthwise": (DepthwiseNet, 18),
}


def _example(name: str) -> tuple[nn.Module, torch.Tensor]:
    build, size = MODELS[name]
    model = build().eval()
    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    return model, torch.randn(1, channels, size, size)


def _torch_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """(module, output C, H, W) of every Conv2d/Linear call, from PyTorch itself (a linear map is 1x1)."""
    calls = []
    handles = [m.register_forward_hook(lambda m, _, y: calls.append((m, (tuple(y.shape[1:]) + (1, 1))[:3])))
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return calls


def _scalesim_rows(text: str) -> list[list]:
    """The topology as SCALE-Sim 3.0.0 reads it (topology_utils.load_arrays_conv): a DP row becomes one row
    per channel with Channels=1; each row gains its output size ceil((H-R+S)/S), its MACs and the IFMAP words
    its convolution windows cover (what SCALE-Sim fetches from DRAM when its SRAM holds them)."""
    rows = []
    for line in text.strip().splitlines()[1:]:
        name, *values = line.split(",")[:-1]
        h, w, r, s, c, k, stride = map(int, values)
        copies, c = (c, 1) if "DP" in name else (1, c)
        out_h, out_w = math.ceil((h - r + stride) / stride), math.ceil((w - s + stride) / stride)
        assert r <= h and s <= w
        read_h = len({i * stride + j for i in range(out_h) for j in range(r)})  # rows the windows cover
        read_w = len({i * stride + j for i in range(out_w) for j in range(s)})
        rows += [[name, out_h, out_w, out_h * out_w * r * s * c * k, read_h * read_w * c]] * copies
    return rows


def _macs(module: nn.Module, shape: tuple[int, ...]) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    out_channels, out_h, out_w = shape
    return out_h * out_w * math.prod(module.kernel_size) * module.in_channels // module.groups * out_channels


@pytest.mark.parametrize("name", MODELS)
def test_scalesim_computes_pytorch_output_sizes_and_macs(name):
    model, x = _example(name)
    for prepared in (model, tz.prepare(model)):
        layers = conv_layers(prepared, x)
        calls = _torch_calls(model, x)
        assert [layer.output_shape for layer in layers] == [shape for _, shape in calls]
        simulated = iter(_scalesim_rows(topology_csv(layers)))
        for layer, (module, shape) in zip(layers, calls):
            mine = [next(simulated) for _ in range(layer.channels if layer.depthwise else 1)]
            assert {(row[0], row[1], row[2]) for row in mine} == {(layer.scalesim_name, *shape[1:])}
            assert sum(row[3] for row in mine) == _macs(module, shape), layer.name
            assert sum(row[4] for row in mine) == layer.ifmap_words
        assert next(simulated, None) is None
    assert any(layer.stride == 2 for layer in layers)


def test_stride_two_rows_hold_the_extent_the_conv_reads():
    model, x = _example("resnet18-cifar")
    rows = {line.split(",")[0]: line for line in topology_csv(conv_layers(model, x)).splitlines()}
    assert rows["stem.0"] == "stem.0,34,34,3,3,1,4,1,"
    assert rows["layer2.0.conv1"] == "layer2.0.conv1,33,33,3,3,4,8,2,"  # 16 = ceil((33 - 3 + 2) / 2)
    assert rows["layer2.0.shortcut.0"] == "layer2.0.shortcut.0,31,31,1,1,4,8,2,"  # last row/column never read
    assert rows["layer4.0.conv1"] == "layer4.0.conv1,9,9,3,3,16,32,2,"


def test_depthwise_rows_follow_scalesims_dp_convention():
    model, x = _example("depthwise")
    layers = {layer.name: layer for layer in conv_layers(model, x)}
    b, group = layers["b"], layers["DPgroup"]
    assert b.depthwise and b.row() == ["b_DP", 11, 11, 3, 3, 4, 2, 2]  # Channels = C, Num Filter = per channel
    assert b.ifmap_words == 11 * 11 * 4 and b.padding_words == 11 * 11 * 4 - 9 * 9 * 4
    assert not group.depthwise and group.row()[0] == "dpgroup" and group.channels == 4  # no DP: not split
    assert group.input_words == 2 * group.ifmap_words  # grouped: SCALE-Sim sees one group's channels
    mobilenet = conv_layers(*_example("mobilenet_v2"))
    depthwise = [layer for layer in mobilenet if layer.depthwise]
    assert depthwise and all("DP" in layer.row()[0] and layer.channels == layer.input_shape[0]
                             and layer.filters == 1 for layer in depthwise)
    assert not any("DP" in layer.row()[0] for layer in mobilenet if not layer.depthwise)


def test_layout_has_a_row_for_every_simulated_row():
    layers = conv_layers(*_example("depthwise"))
    topology, layout = _scalesim_rows(topology_csv(layers)), layout_csv(layers).strip().splitlines()
    split = []
    for line in layout[1:]:
        name, *values = line.split(",")[:-1]
        assert len(values) == 20
        split += [name] * (int(values[4]) if "DP" in name else 1)
    assert split == [row[0] for row in topology]


def test_padding_is_counted_per_row():
    model, x = _example("resnet18-cifar")
    layers = {layer.name: layer for layer in conv_layers(model, x)}
    stem, deep = layers["stem.0"], layers["layer4.1.conv1"]
    assert (stem.ifmap_words, stem.padding_words, stem.input_words) == (34 * 34, 34 * 34 - 32 * 32, 32 * 32)
    assert (deep.ifmap_words, deep.padding_words, deep.input_words) == (6 * 6 * 32, 6 * 6 * 32 - 4 * 4 * 32,
                                                                        4 * 4 * 32)
    shortcut = layers["layer2.0.shortcut.0"]
    assert shortcut.padding_words == 0 and shortcut.ifmap_words == 16 * 16 * 4  # every other row and column


def _links(name: str) -> tuple[list[dict[str, str]], list, tz.TrafficReport]:
    model, x = _example(name)
    prepared = tz.prepare(model, tz.ZebraConfig(block_size=2, threshold=0.1))
    report = tz.measure(prepared, [torch.randn(2, *x.shape[1:]), torch.randn(3, *x.shape[1:])])
    layers = conv_layers(prepared, x)
    return list(csv.DictReader(io.StringIO(conv_maps_csv(layers, report)))), layers, report


@pytest.mark.parametrize("name", ["resnet18-cifar", "mobilenet_v2", "depthwise"])
def test_link_table_has_one_row_per_conv_with_the_reports_bytes(name):
    rows, layers, report = _links(name)
    sites = {layer.name: layer.bytes for layer in report.layers}
    assert [row["layer"] for row in rows] == [layer.name for layer in layers]
    for row, layer in zip(rows, layers):
        assert row["scalesim_name"] == layer.row()[0] and int(row["ifmap_words"]) == layer.ifmap_words
        for side in ("reads", "writes"):
            expected = sites.get(row[side], {})
            assert [row[f"{side}_bytes_{fmt}"] for fmt in FORMATS] == [str(expected.get(fmt, "")) for fmt in FORMATS]
    linked = {row[side] for row in rows for side in ("reads", "writes")} - {"input", "none"}
    assert linked <= set(sites) and rows[0]["reads"] == "input"


def test_links_follow_the_graph():
    rows, _, _ = _links("resnet18-cifar")
    links = {row["layer"]: (row["reads"], row["writes"]) for row in rows}
    assert links["stem.0"] == ("input", "stem.2")
    assert links["layer1.0.conv1"] == ("stem.2", "layer1.0.relu")
    assert links["layer1.0.conv2"] == ("layer1.0.relu", "layer1.0.relu:1")  # through BN, the sum and the ReLU
    assert links["layer2.0.shortcut.0"] == ("layer1.1.relu:1", "layer2.0.relu:1")
    assert links["fc"] == ("none", "none")  # it reads the pooled map, which is not measured
    rows, _, _ = _links("depthwise")
    links = {row["layer"]: (row["reads"], row["writes"]) for row in rows}
    assert links == {"a": ("input", "act_in"), "b": ("act_in", "act_mid"), "DPgroup": ("act_mid", "none"),
                     "head": ("none", "none")}


def test_density_yaml_has_bytes_per_format():
    _, _, report = _links("depthwise")
    document = yaml.safe_load(density_yaml(report, {"model": "depthwise"}))
    assert [layer["bytes"] for layer in document["layers"]] == [layer.bytes for layer in report.layers]


def test_timeloop_files_parse_and_carry_the_layers_shape_and_measured_densities(tmp_path):
    _, layers, report = _links("depthwise")
    sites = {site.name: site for site in report.layers}
    assert write_timeloop(tmp_path, layers, report) == len(layers) == len(list(tmp_path.iterdir()))
    a, b = (yaml.safe_load((tmp_path / layer_file_name(i, layers[i])).read_text()) for i in (0, 1))
    # a: 3x3 stride-2 conv, 3 -> 4 channels, 18x18 input -> 9x9; reads the image (dense), writes act_in
    assert {k: a["problem"]["instance"][k] for k in "CMRSNPQ"} == {"C": 3, "M": 4, "R": 3, "S": 3, "N": 1, "P": 9,
                                                                    "Q": 9}
    assert a["problem"]["instance"]["Hstride"] == a["problem"]["instance"]["Wstride"] == 2
    assert a["problem"]["shape"]["dimensions"] == ["C", "M", "R", "S", "N", "P", "Q"]
    assert a["problem"]["instance"]["densities"] == {
        "Outputs": {"distribution": "hypergeometric", "density": round(sites["act_in"].density, 6)}}
    outputs = a["torchzebra"]["maps"]["Outputs"]
    assert outputs["site"] == "act_in" and outputs["block_density"] == round(sites["act_in"].block_density, 6)
    assert 0 < outputs["block_density"] < 1 and outputs["element_density"] <= outputs["density_in_nonzero_blocks"]
    # a block bitmask over an element bitmask, at DRAM, for each measured map
    assert a["sparse_optimizations"]["targets"] == [{"name": "DRAM", "representation_format": {"data_spaces": [
        {"name": "Outputs", "ranks": [{"format": "B"}, {"format": "B"}]}]}}]
    # b: the depthwise row, one channel run four times, reading act_in and writing act_mid
    assert (b["problem"]["instance"]["C"], b["problem"]["instance"]["M"], b["torchzebra"]["repeat"]) == (1, 1, 4)
    assert b["problem"]["instance"]["densities"]["Inputs"]["density"] == round(sites["act_in"].density, 6)
    assert b["torchzebra"]["maps"]["Outputs"]["site"] == "act_mid"
    dense = yaml.safe_load(timeloop_yaml(layers[1], report, "dense"))
    assert dense["sparse_optimizations"]["targets"] == []
    zebra = timeloop_document(layers[1], report, "zebra")["sparse_optimizations"]["targets"][0]
    assert zebra["representation_format"]["data_spaces"][0]["ranks"] == [{"format": "B"}, {"format": "U"}]
