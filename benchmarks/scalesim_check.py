"""Run the real SCALE-Sim 3.0.0 on torchzebra's export of a ResNet-18 and print, per layer, its cycles and DRAM
words beside the bytes of the maps the layer reads and writes in every format (per image and access), and
beside the compute cycles of torchzebra's analytical runtime (``torchzebra.accelerator.systolic``).

The model is a trained checkpoint (``--checkpoint``, measured on its test split) or an untrained ResNet-18
(CIFAR stem, width 16; the default) or MobileNet-V2 (width 0.25, depthwise convs) with Zebra thresholds on
random non-negative images. The first run makes a virtual environment (``--venv``, default under the system
temp folder) with ``scalesim==3.0.0`` and ``numpy<2.4`` from PyPI (SCALE-Sim 3.0.0 crashes with NumPy >= 2.4).
Not part of the test suite.

    .venv/bin/python benchmarks/scalesim_check.py [--checkpoint runs/X/zebra/last.pt | --model mobilenet_v2]
                                                  [--images 16] [--out DIR] [--venv DIR] [--array 32] [--sram-kb 64]
                                                  [--dataflow os|ws|is] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import torch
import torchvision

import torchzebra as tz
from torchzebra.accelerator.systolic import compute_cycles
from torchzebra.accelerator.work import gemm_of
from torchzebra.core import FORMATS
from torchzebra.export import ConvLayer, conv_layers, conv_maps_csv, layout_csv, topology_csv
from torchzebra.models import ResNet18

REQUIREMENTS = ["scalesim==3.0.0", "numpy<2.4"]
VENV = Path(tempfile.gettempdir()) / "torchzebra-scalesim-venv"
PART = 96  # SCALE-Sim layers per run (its memory grows with them: MobileNet-V2 on a 256x256 array took 16 GB whole)
CONFIG = """[general]
run_name = zebra

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {sram}
FilterSramSzkB = {sram}
OfmapSramSzkB = {sram}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
"""
RUNNER = ("import sys; from scalesim.scale_sim import scalesim; "
          "s = scalesim(save_disk_space=True, verbose=False, config=sys.argv[1], topology=sys.argv[2], "
          "layout=sys.argv[3]); s.run_scale(top_path=sys.argv[4])")


MODELS = {"resnet18": lambda: ResNet18(10, 3, 16, "cifar"),
          "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)}


def model_and_batches(checkpoint: Path | None, name: str, images: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """The prepared model and its input batches: a checkpoint's test images, or random ones."""
    if checkpoint is None:
        model = tz.prepare(MODELS[name](), tz.ZebraConfig(block_size=2, threshold=0.1)).eval()
        return model, [torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(0)).relu()]
    from torchzebra.training.trainer import build_data, load_trained
    model, config = load_trained(checkpoint, ["device=cpu"])
    _, test_set, _ = build_data(config)
    return model, [torch.stack([test_set[i][0] for i in range(images)])]


def scalesim_python(folder: Path) -> Path:
    """The Python of a virtual environment holding SCALE-Sim 3.0.0, made and filled on first use."""
    python = folder / "bin" / "python"
    if not python.exists():
        venv.create(folder, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    return python


def run_scalesim(python: Path, out: Path, array: tuple[int, int], sram_kb: int, dataflow: str = "os") -> Path:
    """Run SCALE-Sim on ``out``'s topology and layout with a ``rows x cols`` array; return its report folder."""
    (out / "scale.cfg").write_text(CONFIG.format(rows=array[0], cols=array[-1], sram=sram_kb, dataflow=dataflow))
    subprocess.run([str(python), "-c", RUNNER, str(out / "scale.cfg"), str(out / "topology.csv"),
                    str(out / "layout.csv"), str(out / "logs")], check=True, stdout=subprocess.DEVNULL)
    return out / "logs" / "zebra"


def read_report(path: Path) -> list[dict[str, str]]:
    """One of SCALE-Sim's report CSVs (its header cells carry spaces and each line a trailing comma)."""
    with open(path) as handle:
        rows = list(csv.reader(handle))
    header = [cell.strip() for cell in rows[0]]
    return [dict(zip(header, (cell.strip() for cell in row))) for row in rows[1:] if row]


def per_layer(layers: list[ConvLayer], reports: Path) -> list[dict[str, int]]:
    """SCALE-Sim's cycles and DRAM words per topology row (a DP row's per-channel layers summed)."""
    compute, access = read_report(reports / "COMPUTE_REPORT.csv"), read_report(reports / "DETAILED_ACCESS_REPORT.csv")
    rows, index = [], 0
    for layer in layers:
        count = layer.channels if layer.depthwise else 1
        pick = range(index, index + count)
        index += count
        rows.append({"cycles": sum(int(compute[i]["Total Cycles"]) for i in pick),
                     "ifmap": sum(int(float(access[i]["DRAM IFMAP Reads"])) for i in pick),
                     "ofmap": sum(int(float(access[i]["DRAM OFMAP Writes"])) for i in pick)})
    return rows


def map_bytes(report: tz.TrafficReport) -> dict[str, dict[str, float]]:
    """Each measured map's bytes per format, per image and per access (write or read)."""
    return {layer.name: {fmt: layer.bytes[fmt] / (layer.maps * (1 + layer.consumers)) for fmt in FORMATS}
            for layer in report.layers}


def deviations(layers: list[ConvLayer], simulated: list[dict[str, int]], array: tuple[int, int],
               dataflow: str) -> list[float]:
    """Per row: (analytical compute cycles - SCALE-Sim's Total Cycles) / SCALE-Sim's."""
    ours = [compute_cycles(gemm_of(layer), array[0], array[-1], dataflow) for layer in layers]
    return [(mine - sim["cycles"]) / sim["cycles"] for mine, sim in zip(ours, simulated)]


def print_table(layers: list[ConvLayer], simulated: list[dict[str, int]], sizes: dict[str, dict[str, float]],
                deviation: list[float]) -> None:
    """SCALE-Sim's numbers beside ours, one line per layer, then whether its DRAM words are ours."""
    formats = "/".join(FORMATS)
    print(f"{'layer':<20} {'cycles':>7} {'ours':>6} {'DRAM ifmap':>10} {'ifmap_words':>11} {'padding':>7}  "
          f"{'reads: bytes ' + formats:<40} {'DRAM ofmap':>10}  {'writes: bytes ' + formats}")
    for layer, sim, dev in zip(layers, simulated, deviation):
        reads, writes = (" ".join(f"{sizes[site][fmt]:.0f}" for fmt in FORMATS) if site in sizes else site
                         for site in (layer.reads, layer.writes))
        print(f"{layer.name:<20} {sim['cycles']:>7} {dev:>+6.1%} {sim['ifmap']:>10} {layer.ifmap_words:>11} "
              f"{layer.padding_words:>7}  {reads:<40} {sim['ofmap']:>10}  {writes}")
    same_in = sum(sim["ifmap"] == layer.ifmap_words for layer, sim in zip(layers, simulated))
    same_out = sum(sim["ofmap"] == layer.ofmap_words for layer, sim in zip(layers, simulated))
    print(f"total cycles {sum(s['cycles'] for s in simulated)}; DRAM IFMAP reads == ifmap_words on {same_in}/"
          f"{len(layers)} rows, DRAM OFMAP writes == ofmap_words on {same_out}/{len(layers)}; padding is "
          f"{sum(layer.padding_words for layer in layers) / sum(s['ifmap'] for s in simulated):.1%} of the IFMAP reads")


def simulate(model: torch.nn.Module, batches: list[torch.Tensor], out: Path, python: Path, array: tuple[int, int],
             sram_kb: int = 64, dataflow: str = "os") -> tuple[list[ConvLayer], list[dict[str, int]], tz.TrafficReport]:
    """Export ``model``'s rows into ``out``, run SCALE-Sim on them and measure the maps: (rows, SCALE-Sim's cycles
    and DRAM words per row, our traffic report)."""
    layers = conv_layers(model, batches[0][:1])
    report = tz.measure(model, batches, bits=8)
    simulated = []
    for index, part in enumerate(parts(layers)):  # SCALE-Sim keeps every layer's traces in memory until it ends
        folder = out / f"part{index}" if index or len(part) < len(layers) else out
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "topology.csv").write_text(topology_csv(part))
        (folder / "layout.csv").write_text(layout_csv(part))
        simulated += per_layer(part, run_scalesim(python, folder, array, sram_kb, dataflow))
    (out / "layers.csv").write_text(conv_maps_csv(layers, report))
    return layers, simulated, report


def parts(layers: list[ConvLayer], most: int = PART) -> list[list[ConvLayer]]:
    """Consecutive rows in runs of at most ``most`` SCALE-Sim layers (a depthwise row is one per channel)."""
    chunks: list[list[ConvLayer]] = [[]]
    count = 0
    for layer in layers:
        size = layer.channels if layer.depthwise else 1
        if chunks[-1] and count + size > most:
            chunks.append([])
            count = 0
        chunks[-1].append(layer)
        count += size
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained last.pt (default: an untrained ResNet-18)")
    parser.add_argument("--model", default="resnet18", choices=MODELS,
                        help="untrained model without --checkpoint: resnet18 (default) or mobilenet_v2 (depthwise)")
    parser.add_argument("--images", type=int, default=16, help="images measured (default 16)")
    parser.add_argument("--out", type=Path, help="folder for the exports and SCALE-Sim's reports (default: temp)")
    parser.add_argument("--venv", type=Path, default=VENV, help="virtual environment for SCALE-Sim (made if missing)")
    parser.add_argument("--array", type=int, nargs="+", default=[32], metavar="N",
                        help="systolic array rows and columns: N (square) or ROWS COLS (default 32)")
    parser.add_argument("--sram-kb", type=int, default=64, help="each SRAM's size in kB (default 64)")
    parser.add_argument("--dataflow", default="os", choices=("os", "ws", "is"), help="SCALE-Sim's dataflow (default os)")
    parser.add_argument("--json", type=Path, help="also write the per-layer cycles and deviations here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="scalesim-check-"))
    model, batches = model_and_batches(args.checkpoint, args.model, args.images)
    layers, simulated, report = simulate(model, batches, out, scalesim_python(args.venv), args.array, args.sram_kb,
                                         args.dataflow)
    print(f"SCALE-Sim 3.0.0, {args.array[0]}x{args.array[-1]} {args.dataflow} array, {args.sram_kb} kB SRAMs, 1-byte "
          f"words; our bytes at 8 bits, per image and access, over {report.images} images; 'ours': the analytical "
          f"compute cycles' deviation from SCALE-Sim's; files in {out}")
    deviation = deviations(layers, simulated, args.array, args.dataflow)
    print_table(layers, simulated, map_bytes(report), deviation)
    spread = [abs(d) for d in deviation]
    print(f"analytical compute cycles against SCALE-Sim's Total Cycles over {len(layers)} rows: median |deviation| "
          f"{statistics.median(spread):.2%}, max {max(spread):.2%}")
    if args.json:
        rows = [{"layer": layer.name, "scalesim_cycles": sim["cycles"], "deviation": dev}
                for layer, sim, dev in zip(layers, simulated, deviation)]
        args.json.write_text(json.dumps({"model": args.checkpoint and str(args.checkpoint) or args.model,
                                         "array": args.array, "dataflow": args.dataflow, "rows": rows,
                                         "median": statistics.median(spread), "max": max(spread)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
