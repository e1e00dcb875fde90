"""The estimate against a baseline model at any batch: the limits of bandwidth and compute, a hand-worked two-layer
network at batch 1 and 4, the curves and break-even point, the settings' warnings and the command line."""

import json
import warnings

import pytest
import torch
import yaml
from conftest import ResidualNet

import torchzebra as tz
from torchzebra.accelerator import Accelerator, AcceleratorError, Gemm, energy_story, estimate, load_accelerator
from torchzebra.accelerator.cost import cost_network
from torchzebra.accelerator.curves import MARGIN, Pair, break_even
from torchzebra.accelerator.work import LayerWork
from torchzebra.cli import main
from torchzebra.core import FORMATS


def accelerator(**changes) -> Accelerator:
    values = dict(name="tiny", rows=4, cols=4, dataflow="os", clock_ghz=1.0, dram_gbps=4.0,
                  sram_kb={"ifmap": 1, "filter": 1, "ofmap": 1}, pj_per_mac=0.5, pj_per_dram_bit=10.0)
    return Accelerator(**{**values, **changes})


@pytest.fixture
def pair_of_models():
    """A Zebra model (threshold 0.2) and a baseline (threshold 0: nothing zeroed) measured on the same images."""
    x = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    zebra = tz.prepare(ResidualNet().eval(), tz.ZebraConfig(block_size=2, threshold=0.2))
    base = tz.prepare(ResidualNet().eval(), tz.ZebraConfig(block_size=2, threshold=0.0))
    return zebra, base, x, tz.measure(zebra, [x]), tz.measure(base, [x])


def _estimate(pair_of_models, spec, batch):
    zebra, base, x, report, base_report = pair_of_models
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the huge test arrays are implausible on purpose
        return estimate(zebra, x, report, [spec], batch=batch, baseline=(base, base_report)).accelerators[spec.name]


@pytest.mark.parametrize("batch", [1, 16])
def test_unlimited_bandwidth_gives_no_speedup_against_either_baseline(pair_of_models, batch):
    result = _estimate(pair_of_models, accelerator(name="wide", dram_gbps=1e9), batch)
    for reference in ("dense", "zvc"):
        assert all(result.against_baseline(fmt, reference)["speedup"] == pytest.approx(1.0) for fmt in FORMATS)
    assert result.against_baseline("zebra_zvc", "zvc")["energy_saving"] > 0  # the bytes still cost energy
    assert result.curves["break_even"]["dram_gbps"] is None and "1/256" in result.curves["break_even"]["reason"]


def test_unlimited_compute_speedup_is_the_ratio_of_dram_bytes_weights_per_batch(pair_of_models):
    fast = accelerator(name="fast", rows=4096, cols=4096, clock_ghz=1000.0, dram_gbps=0.001)
    result = _estimate(pair_of_models, fast, 4)
    weights = sum(layer.weight_bytes for layer in result.layers)  # the same network: the same weights
    assert result.weight_bytes() == weights / 4 and result.baseline.weight_bytes() == weights / 4

    def moved(estimate, fmt):  # activation bytes per image, from the layers, plus the weights over the batch
        return weights / 4 + sum(layer.formats[fmt].dram_bytes - layer.weight_bytes / 4 for layer in estimate.layers)

    for reference in ("dense", "zvc"):
        for fmt in FORMATS:
            ratio = moved(result.baseline, reference) / moved(result, fmt)
            assert result.against_baseline(fmt, reference)["speedup"] == pytest.approx(ratio, rel=0.01)
    assert result.against_baseline("zebra_zvc", "zvc")["speedup"] > 1.05  # the check has teeth


# Two layers on a 4x4 output-stationary array at 1 GHz, 4 GB/s (4 B/cycle), 0.5 pJ/MAC, 10 pJ/DRAM bit:
# a: 3x3 conv 4 -> 8, 16 pixels: 335 compute cycles (8 folds of 42, minus 1), 288 weight bytes, 4,608 MACs;
# b: 1x1 conv 8 -> 4, 16 pixels: 4 folds of 8 + 4 + 4 - 2 = 14 cycles, minus 1: 55 cycles, 32 weight bytes, 512 MACs.
ZEBRA = [LayerWork("a", Gemm(16, 36, 8), {"dense": 2000, "zvc": 1200, "zebra": 800, "zebra_zvc": 600}),
         LayerWork("b", Gemm(16, 8, 4), {"dense": 400, "zvc": 300, "zebra": 200, "zebra_zvc": 100})]
BASE = [LayerWork("a", Gemm(16, 36, 8), {"dense": 2000, "zvc": 1600, "zebra": 1600, "zebra_zvc": 1600}),
        LayerWork("b", Gemm(16, 8, 4), {"dense": 400, "zvc": 360, "zebra": 360, "zebra_zvc": 360})]


def test_hand_worked_two_layers_at_batch_1_and_4():
    spec = accelerator()
    zebra, base = cost_network(ZEBRA, spec, 8, 1), cost_network(BASE, spec, 8, 1)
    assert [layer.compute_cycles for layer in zebra.layers] == [335, 55]
    # batch 1. baseline ZVC: a 288 + 1600 = 1888 B -> 472 cycles (> 335); b 32 + 360 = 392 B -> 98 (> 55): 570
    # Zebra+ZVC: a 288 + 600 = 888 B -> 222, compute-bound at 335; b 32 + 100 = 132 B -> 33, at 55: 390
    # baseline dense: a 2288 B -> 572; b 432 B -> 108: 680
    assert base.total("zvc").cycles == 570 and zebra.total("zebra_zvc").cycles == 390
    assert base.total("dense").cycles == 680 and base.total("zvc").dram_bytes == 2280
    assert zebra.total("zebra_zvc").dram_bytes == 1020
    # batch 4: weights once per 4 images. baseline ZVC: a 288 + 4 x 1600 = 6688 B -> 1672 cycles, 418 per image
    # (> 335); b 32 + 4 x 360 = 1472 B -> 368, 92 per image (> 55): 510 cycles, 2040 B per image.
    # Zebra+ZVC: a 288 + 2400 = 2688 B -> 672, 168 per image (< 335); b 32 + 400 = 432 B -> 108, 27 (< 55): 390;
    # 780 B per image: 0.0624 uJ of DRAM + 5,120 MACs x 0.5 pJ = 0.00256 uJ.
    zebra4, base4 = cost_network(ZEBRA, spec, 8, 4), cost_network(BASE, spec, 8, 4)
    assert base4.total("zvc").cycles == 510 and base4.total("zvc").dram_bytes == 2040
    assert zebra4.total("zebra_zvc").cycles == 390 and zebra4.total("zebra_zvc").dram_bytes == 780
    assert zebra4.total("zebra_zvc").energy_uj == pytest.approx(0.0624 + 0.00256)
    assert base4.total("zvc").energy_uj == pytest.approx(2040 * 80 / 1e6 + 0.00256)
    pair = Pair(spec, ZEBRA, BASE, (8, 8))
    assert pair.speedup(4.0, 1) == pytest.approx(570 / 390) and pair.speedup(4.0, 4) == pytest.approx(510 / 390)
    assert pair.point(4.0, 4)["energy_saving"] == pytest.approx(1 - 0.06496 / 0.16576)


def test_break_even_is_where_the_speedup_crosses_the_margin():
    pair = Pair(accelerator(), ZEBRA, BASE, (8, 8))
    point = break_even(pair, 1)
    gbps = point["dram_gbps"]
    assert point["reason"] is None and point["bytes_per_mac"] == pytest.approx(gbps / 1.0 / 16)
    assert pair.speedup(gbps, 1) >= MARGIN > pair.speedup(gbps * 1.01, 1)
    # below the break-even, above 1.10x; without bandwidth, the byte ratio: 2280 / 1020 at batch 1
    assert pair.speedup(gbps / 2, 1) >= MARGIN and pair.speedup(1e-6, 1) == pytest.approx(2280 / 1020, rel=1e-3)
    same = Pair(accelerator(), BASE, BASE, (8, 8))  # no Zebra cut: never faster, and the reason says why
    assert break_even(same, 1)["dram_gbps"] is None and "1.000x" in break_even(same, 1)["reason"]


def test_the_json_carries_both_baselines_and_the_curves(pair_of_models):
    result = _estimate(pair_of_models, load_accelerator("ethos-u55"), 16).to_dict()
    assert result["batch"] == 16 and list(result["baseline"]["formats"]) == ["dense", "zvc"]
    assert set(result["against_baseline"]) == {"dense", "zvc"}
    assert all(set(result["against_baseline"][ref][fmt]) == {"speedup", "energy_saving", "dram_energy_saving"}
               for ref in ("dense", "zvc") for fmt in FORMATS)
    curves = result["curves"]
    assert len(curves["bandwidth"]) == 25 and [p["batch"] for p in curves["batch"]][:3] == [1, 2, 4]
    gbps = [p["dram_gbps"] for p in curves["bandwidth"]]
    assert gbps == sorted(gbps) and gbps[0] == pytest.approx(4 / 256) and 4.0 in gbps
    assert all(p["break_even"]["batch"] == p["batch"] and p["dram_gbps"] == 4.0 for p in curves["batch"])
    assert set(curves["break_even"]) == {"dram_gbps", "bytes_per_mac", "batch", "reason"}
    json.dumps(result)  # plain JSON


def test_energy_story_names_the_weights_share_and_the_batch(pair_of_models):
    line = energy_story(_estimate(pair_of_models, load_accelerator("eyeriss"), 1))
    assert "\n" not in line and "fewer activation bytes than the baseline in ZVC" in line
    assert "weights are" in line and "at batch 64" in line and "MACs" in line


def test_presets_carry_their_sources_batch_and_the_memory_bound_preset():
    assert {name: load_accelerator(name).batch for name in ("eyeriss", "tpu-v1", "mobile-npu", "ethos-u55")} == \
        {"eyeriss": 4, "tpu-v1": 32, "mobile-npu": 1, "ethos-u55": 1}
    u55 = load_accelerator("ethos-u55")
    assert u55.macs_per_cycle == 256 and u55.bytes_per_cycle == 8.0


def test_batch_key_is_checked(tmp_path):
    values = {"array": [8, 8], "dataflow": "ws", "clock_ghz": 1, "dram_gbps": 10, "sram_kb": {"ifmap": 8, "filter": 8,
              "ofmap": 8}, "pj_per_mac": 0.3, "pj_per_dram_bit": 8, "batch": 0}
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(AcceleratorError, match="batch=0 is invalid: expected an integer >= 1"):
        load_accelerator(path)


def test_an_implausible_array_warns_in_one_line(pair_of_models):
    zebra, base, x, report, _ = pair_of_models
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimate(zebra, x, report, [accelerator(name="huge", rows=100000, cols=100000)])
    lines = [str(w.message) for w in caught]
    assert len(lines) == 2 and all("\n" not in line and "100000x100000" in line for line in lines)
    assert "100,000 rows" in lines[0] and "100,000 cols" in lines[1]


def test_the_summary_names_every_setting_that_shapes_the_figures(pair_of_models):
    zebra, base, x, report, base_report = pair_of_models
    text = str(estimate(zebra, x, report, [accelerator(weight_bits=3)], batch=4, baseline=(base, base_report)))
    assert "weight_bits 3" in text and "batch 4 (weights read once per batch)" in text
    assert "DRAM KiB/image" in text and "vs base ZVC" in text and "break-even" in text


def test_zebra_estimate_refuses_a_bad_batch_in_one_line(tmp_path, capsys):
    assert main(["estimate", str(tmp_path / "no.pt"), "--batch", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--batch 0 is invalid" in err and err.count("\n") == 1


def test_zebra_estimate_passes_the_baseline_and_the_batch(pair_of_models, monkeypatch, tmp_path, capsys):
    from torchzebra.cli import verbs
    seen = {}

    zebra, base, x, report, base_report = pair_of_models

    def fake(checkpoint, accelerators, *args, **kwargs):
        seen.update(kwargs)
        return tz.estimate(zebra, x, report, ["eyeriss"], batch=kwargs["batch"], baseline=(base, base_report))

    monkeypatch.setattr(verbs, "estimate_checkpoint", fake)
    assert main(["estimate", str(tmp_path / "z.pt"), "--baseline", str(tmp_path / "b.pt"), "--batch", "16",
                 "--json", str(tmp_path / "e.json")]) == 0
    assert seen["batch"] == 16 and seen["baseline"] == tmp_path / "b.pt"
    assert "baseline, ZVC" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["accelerators"]["eyeriss"]["batch"] == 16


def test_the_report_draws_the_curves_and_holds_the_tallest_stall_bar(pair_of_models, tmp_path):
    from torchzebra.reports.plots import plt
    from torchzebra.reports.roofline import estimate_figures, stall_bars
    result = _estimate(pair_of_models, load_accelerator("eyeriss"), 1)
    (tmp_path / "estimate.json").write_text(json.dumps({"accelerators": {"eyeriss": result.to_dict()}}))
    figures = estimate_figures(tmp_path)
    assert [name for name, _, _ in figures] == ["roofline-eyeriss.png", "curves-eyeriss.png"]
    caption = figures[1][1]
    assert "at batch 1 it is" in caption
    assert "fewer activation bytes" in caption and figures[1][2].startswith(b"\x89PNG")
    layers = [{"name": name, "formats": {fmt: {"compute_cycles": compute, "stall_cycles": stall}
                                         for fmt in ("dense", "zebra_zvc")}}
              for name, compute, stall in (("a", 100, 0), ("b", 50000, 0), ("c", 10, 5))]
    figure, axes = plt.subplots()
    stall_bars(axes, layers)  # bars without stall stick to their tops: the axis must still hold the tallest whole
    assert axes.get_ylim()[1] > 50000
    plt.close(figure)
