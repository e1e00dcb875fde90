"""The accelerator estimate: SCALE-Sim's runtime in closed form, a hand-worked layer, the limits of compute and
bandwidth, on-chip maps, the JSON shape and bad descriptions."""

import json
import math
import warnings

import pytest
import torch
import yaml
from torch import nn

import torchzebra as tz
from torchzebra.accelerator import (
    PRESETS,
    Accelerator,
    AcceleratorError,
    Gemm,
    compute_cycles,
    estimate,
    layer_work,
    load_accelerator,
)
from torchzebra.accelerator.cost import AcceleratorEstimate, layer_cost
from torchzebra.accelerator.work import UNLINKED, LayerWork
from torchzebra.cli import main
from torchzebra.core import FORMATS
from torchzebra.export import conv_layers


def accelerator(**changes) -> Accelerator:
    values = dict(name="tiny", rows=4, cols=4, dataflow="os", clock_ghz=1.0, dram_gbps=4.0,
                  sram_kb={"ifmap": 1, "filter": 1, "ofmap": 1}, pj_per_mac=0.5, pj_per_dram_bit=10.0)
    return Accelerator(**{**values, **changes})


# SCALE-Sim 3.0.0's "Total Cycles" (COMPUTE_REPORT.csv, InterfaceBandwidth CALC) on an 8x16 array for five
# topology rows (IFMAP H/W, filter H/W, channels, filters, stride), run once per dataflow.
ROWS = [(10, 3, 4, 8, 1), (34, 3, 16, 16, 1), (9, 3, 32, 70, 2), (1, 1, 64, 10, 1), (17, 1, 20, 40, 2)]
SCALESIM_8x16 = {"os": [463, 21247, 3099, 85, 1385], "ws": [469, 18971, 8279, 247, 998],
                 "is": [759, 52991, 3599, 319, 1259]}


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_compute_cycles_are_scalesims(dataflow):
    for (size, kernel, channels, filters, stride), expected in zip(ROWS, SCALESIM_8x16[dataflow]):
        out = math.ceil((size - kernel + stride) / stride)
        gemm = Gemm(out * out, kernel * kernel * channels, filters)
        assert compute_cycles(gemm, 8, 16, dataflow) == expected


def test_a_depthwise_layer_runs_channel_by_channel():
    one = compute_cycles(Gemm(64, 9, 1), 4, 4, "ws")
    assert compute_cycles(Gemm(64, 9, 1, repeat=12), 4, 4, "ws") == 12 * one
    assert compute_cycles(Gemm(0, 0, 0), 4, 4, "os") == 0


def test_hand_worked_layer():
    """3x3 conv, 4 -> 8 channels, 4x4 output pixels on a 4x4 output-stationary array at 1 GHz, 4 GB/s."""
    work = LayerWork("conv", Gemm(pixels=16, window=36, filters=8),
                     {"dense": 2000.0, "zvc": 1200.0, "zebra": 800.0, "zebra_zvc": 600.0})
    layer = layer_cost(work, accelerator(), bits=8)
    # folds: ceil(16/4) * ceil(8/4) = 8, each 36 + 4 + 4 - 2 = 42 cycles; SCALE-Sim counts 8 * 42 - 1
    assert layer.compute_cycles == 335 and layer.macs == 16 * 36 * 8 == 4608
    assert layer.weight_bytes == 288  # 36 * 8 weights at 8 bits
    expected = {  # DRAM bytes = activations + 288; memory cycles = ceil(bytes / 4)
        "dense": (2288, 572, 572, 237, 907), "zvc": (1488, 372, 372, 37, 707),
        "zebra": (1088, 272, 335, 0, 607), "zebra_zvc": (888, 222, 335, 0, 557)}
    for fmt, (dram, memory, cycles, stall, serial) in expected.items():
        cost = layer.formats[fmt]
        assert (cost.dram_bytes, cost.memory_cycles, cost.cycles, cost.stall_cycles, cost.serial_cycles) == \
               (dram, memory, cycles, stall, serial)
        assert cost.dram_energy_uj == pytest.approx(dram * 8 * 10 / 1e6)  # bits x 10 pJ
        assert cost.energy_uj == pytest.approx(dram * 80 / 1e6 + 4608 * 0.5 / 1e6)  # + MACs x 0.5 pJ
    network = AcceleratorEstimate(accelerator(), [layer])
    assert network.speedup("zvc") == pytest.approx(572 / 372) and network.speedup("zebra") == pytest.approx(572 / 335)
    assert network.saving("zebra_zvc", "dram_energy_uj") == pytest.approx(1 - 888 / 2288)
    assert layer_cost(work, accelerator(weight_bits=16), bits=8).weight_bytes == 576


@pytest.fixture
def measured(residual_net):
    model = tz.prepare(residual_net, tz.ZebraConfig(block_size=2, threshold=0.2))
    x = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    return model, x, tz.measure(model, [x])


def test_layers_carry_every_measured_byte(measured):
    model, x, report = measured
    layers = conv_layers(model, x)
    assert [layer.name for layer in layers] == ["conv1", "conv2", "fc"]
    assert layers[1].fused_reads and layers[2].fused_reads  # the residual sum's operand; the pooled map
    work = layer_work(layers, report)
    assert UNLINKED not in [w.name for w in work]
    for fmt in FORMATS:
        assert sum(w.activation_bytes[fmt] for w in work) == pytest.approx(report.total_bytes(fmt) / report.images)
    unlinked = layer_work(layers[:1], report)  # rows missing: their accesses still count, on one extra row
    assert unlinked[-1].name == UNLINKED and unlinked[-1].gemm.macs == 0
    assert sum(w.activation_bytes["dense"] for w in unlinked) == pytest.approx(report.total_bytes("dense") / 6)


def test_unlimited_compute_speedup_is_the_byte_ratio(measured):
    model, x, report = measured
    fast = accelerator(name="fast", rows=4096, cols=4096, clock_ghz=1000.0, dram_gbps=0.001)
    result = estimate(model, x, report, [fast]).accelerators["fast"]
    dense = result.total("dense").dram_bytes
    for fmt in FORMATS:
        assert result.speedup(fmt) == pytest.approx(dense / result.total(fmt).dram_bytes, rel=0.01)
    assert result.speedup("zebra_zvc") > 1.05  # the check has teeth: the maps are sparse


def test_unlimited_bandwidth_gives_no_speedup(measured):
    model, x, report = measured
    wide = accelerator(name="wide", dram_gbps=1e9)
    result = estimate(model, x, report, [wide]).accelerators["wide"]
    assert all(result.speedup(fmt) == pytest.approx(1.0, abs=0.005) for fmt in FORMATS)
    assert result.total("dense").stall_cycles == 0 and result.saving("zebra_zvc") > 0  # bytes still cost energy


def test_on_chip_keeps_what_fits(measured):
    model, x, report = measured
    huge = accelerator(name="huge", sram_kb={"ifmap": 1e6, "filter": 1, "ofmap": 1e6})
    kept = estimate(model, x, report, [huge], on_chip=True).accelerators["huge"]
    assert all(layer.formats["dense"].dram_bytes == layer.weight_bytes for layer in kept.layers)
    none = accelerator(name="none", sram_kb={"ifmap": 0, "filter": 0, "ofmap": 0})
    off, on = (estimate(model, x, report, [none], on_chip=flag).accelerators["none"] for flag in (False, True))
    assert off.to_dict() == on.to_dict()
    # a map small enough in Zebra+ZVC but not dense stays on chip in Zebra+ZVC only
    sizes = {layer.name: layer.bytes for layer in report.layers}
    per_access = {site: {fmt: b[fmt] / (6 * (1 + c.consumers)) for fmt, b in [(f, sizes[site]) for f in FORMATS]}
                  for site, c in ((layer.name, layer) for layer in report.layers)}
    site = min(per_access, key=lambda s: per_access[s]["zebra_zvc"])
    room = (per_access[site]["zebra_zvc"] + per_access[site]["dense"]) / 2 / 1024
    middle = accelerator(name="mid", sram_kb={"ifmap": room, "filter": 0, "ofmap": room})
    mid = estimate(model, x, report, [middle], on_chip=True).accelerators["mid"]
    assert mid.total("zebra_zvc").dram_bytes < off.total("zebra_zvc").dram_bytes
    assert mid.total("dense").dram_bytes == off.total("dense").dram_bytes


@pytest.fixture
def partly_counted():
    """A model whose second conv block is kept whole: its relu is not instrumented, half the activations."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prepare's own warning about the block is test_any_cnn's
        prepared = tz.prepare(model, tz.ZebraConfig(block_size=2, threshold=0.2, leaf_modules=["2"]))
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return prepared, x, tz.measure(prepared, [x])


def test_an_incomplete_report_warns_once_and_the_json_carries_its_coverage(partly_counted, measured):
    model, x, report = partly_counted
    assert report.coverage == 0.5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = estimate(model, x, report, ["eyeriss", "tpu-v1"])
    coverage = [w for w in caught if "traffic report" in str(w.message)]  # tpu-v1's array also dwarfs these layers
    assert len(coverage) == 1  # once, not once per accelerator
    message = str(coverage[0].message)
    assert "\n" not in message and "counts 50.0% of the activation elements" in message
    assert "leaves the uncounted maps' DRAM bytes out" in message
    assert result.to_dict()["coverage"] == 0.5
    model, x, report = measured
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every map counted: no warning
        assert estimate(model, x, report, ["eyeriss"]).to_dict()["coverage"] == 1.0


def test_zebra_estimate_prints_the_coverage_warning_as_one_line(partly_counted, monkeypatch, tmp_path, capsys):
    from torchzebra.cli import verbs
    model, x, report = partly_counted
    monkeypatch.setattr(verbs, "estimate_checkpoint", lambda *args, **kwargs: estimate(model, x, report, ["eyeriss"]))
    assert main(["estimate", str(tmp_path / "last.pt"), "--json", str(tmp_path / "e.json")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["zebra estimate: warning: the traffic report counts 50.0% of the activation elements on 4-D maps: "
                   "the estimate leaves the uncounted maps' DRAM bytes out, so its speed-ups and savings are not the "
                   "whole model's (docs/ACCELERATORS.md)"]
    assert json.loads((tmp_path / "e.json").read_text())["coverage"] == 0.5


def test_presets_load_and_say_where_their_numbers_come_from():
    from importlib import resources
    for name in PRESETS:
        spec = load_accelerator(name)
        assert spec.name == name and spec.bytes_per_cycle > 0
        text = resources.files("torchzebra.accelerator").joinpath("presets", f"{name}.yaml").read_text()
        assert "pJ" in text and any(year in text for year in ("2014", "2016", "2017"))
    assert load_accelerator("tpu-v1").macs_per_cycle == 256 * 256 and load_accelerator("eyeriss").macs_per_cycle == 168


def write(tmp_path, values, name="board.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


GOOD = {"array": [8, 8], "dataflow": "ws", "clock_ghz": 1, "dram_gbps": 10, "sram_kb": {"ifmap": 8, "filter": 8,
        "ofmap": 8}, "pj_per_mac": 0.3, "pj_per_dram_bit": 8}


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "unknown setting(s) ['colour']"),
    ({"dram_gbps": -1}, "dram_gbps=-1 is invalid: expected a number > 0"),
    ({"array": None}, "missing setting(s) ['array']"),  # None: the key left out
    ({"array": [8]}, "array=[8] is invalid: expected [rows, cols]"),
    ({"dataflow": "rs"}, "dataflow='rs' is invalid: expected os or ws or is"),
    ({"sram_kb": {"ifmap": 8}}, "sram_kb={'ifmap': 8} is invalid"),
    ({"weight_bits": 0}, "weight_bits=0 is invalid"),
])
def test_bad_description_is_one_line(tmp_path, capsys, change, message):
    values = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = write(tmp_path, values)
    with pytest.raises(AcceleratorError, match="board.yaml"):
        load_accelerator(path)
    assert main(["estimate", str(tmp_path / "no.pt"), "--accelerator", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_exponent_numbers_that_yaml_reads_as_text_are_numbers(tmp_path):
    """``dram_gbps: 1.0e9`` is text to PyYAML (no exponent sign): the description takes it as the number."""
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(GOOD).replace("dram_gbps: 10", "dram_gbps: 1.0e9").replace(
        "pj_per_mac: 0.3", "pj_per_mac: 3e-1"))
    board = load_accelerator(path)
    assert board.dram_gbps == 1e9 and board.pj_per_mac == 0.3


@pytest.mark.parametrize("text, message", [("array: [8, 8\n", "is not valid YAML"), ("- 1\n", "must hold a mapping"),
                                           (None, "neither a preset")])
def test_unreadable_description_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "x.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["estimate", str(tmp_path / "no.pt"), "--accelerator", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_names_are_unique(tmp_path):
    with pytest.raises(AcceleratorError, match="each name"):
        from torchzebra.accelerator import load_accelerators
        load_accelerators(["eyeriss", write(tmp_path, GOOD, "eyeriss.yaml")])


TINY = ["--set", "model.options={stem: cifar, width: 4}", "--set", "data.train_subset=64", "--set",
        "data.test_subset=32", "--set", "data.batch_size=32", "--set", "device=cpu", "--quiet"]


@pytest.mark.slow  # trains a tiny model on Fashion-MNIST first (about 20 s on 2 cores)
def test_estimate_command_writes_the_documented_json(tmp_path, capsys):
    assert main(["train", *TINY, "--set", "train.epochs=1", "--set", "zebra.enabled=true", "--set",
                 "zebra.threshold=0.3", "--run-dir", str(tmp_path / "run")]) == 0
    board = write(tmp_path, GOOD)
    capsys.readouterr()
    assert main(["estimate", str(tmp_path / "run" / "last.pt"), "--accelerator", str(board), "--accelerator",
                 "eyeriss", "--images", "8", "--json", str(tmp_path / "e.json"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mean of 8 measured images" in out and "board: 8x8 ws array" in out and "Zebra+ZVC" in out
    result = json.loads((tmp_path / "e.json").read_text())
    assert list(result["accelerators"]) == ["board", "eyeriss"]
    types = {"cycles": (int, float), "stall_cycles": (int, float), "speedup": float, "dram_bytes": (int, float),
             "dram_energy_uj": float, "energy_uj": float}
    for entry in result["accelerators"].values():
        assert list(entry["formats"]) == list(FORMATS)
        assert all(isinstance(entry["formats"][fmt][key], kind) for fmt in FORMATS for key, kind in types.items())
        assert entry["formats"]["dense"]["speedup"] == 1.0 and entry["formats"]["zebra_zvc"]["dram_bytes"] < \
            entry["formats"]["dense"]["dram_bytes"]
        for layer in entry["layers"]:
            assert isinstance(layer["name"], str) and isinstance(layer["macs"], int)
            assert isinstance(layer["compute_cycles"], int)
            assert all(isinstance(layer["formats"][fmt][key], (int, float)) for fmt in FORMATS
                       for key in ("dram_bytes", "cycles"))


def test_the_docs_worked_example_is_what_the_model_computes():
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ACCELERATORS.md").read_text()
    block = doc.split("<!-- worked example: begin -->")[1].split("<!-- worked example: end -->")[0]
    activations = {"dense": 2000, "zvc": 1200, "zebra": 800, "zebra_zvc": 600}
    layer = layer_cost(LayerWork("conv", Gemm(16, 36, 8), activations), accelerator(), bits=8)
    for fmt, cost in layer.formats.items():
        row = (f"| {fmt} | {activations[fmt]} | {cost.dram_bytes:g} | {cost.memory_cycles:g} | {cost.cycles:g} | "
               f"{cost.stall_cycles:g} | {cost.serial_cycles:g} | {cost.dram_energy_uj:.6f} | {cost.energy_uj:.6f} |")
        assert row in block, row
    assert layer.compute_cycles == 335 and "`8 x 42 - 1 = 335` cycles" in doc


def test_the_report_draws_rooflines_from_a_runs_estimate(measured, tmp_path):
    from torchzebra.reports.roofline import estimate_figures
    model, x, report = measured
    assert estimate_figures(tmp_path) == []  # no estimate.json: no figures
    (tmp_path / "estimate.json").write_text(json.dumps(estimate(model, x, report, ["eyeriss", "tpu-v1"]).to_dict()))
    figures = estimate_figures(tmp_path, "0-")
    assert [name for name, _, _ in figures] == ["0-roofline-eyeriss.png", "0-roofline-tpu-v1.png"]
    assert all(png.startswith(b"\x89PNG") and "roofline" in caption for _, caption, png in figures)
