"""Run the real SCALE-Sim 3.0.0 on torchzebra's export of a ResNet-18 and print, per layer, its cycles and DRAM
words beside the bytes of the maps the layer reads and writes in every format (per image and access), and
beside the compute cycles of torchzebra's analytical runtime (``torchzebra.accelerator.systolic``). With
``--bandwidth WORDS``, also the memory-bound side: SCALE-Sim's USER bandwidth mode per row and format (its IFMAP
and OFMAP links widened by the format's byte ratio) against torchzebra's estimate (docs/ACCELERATORS.md).

The model is a trained checkpoint (``--checkpoint``, measured on its test split) or an untrained ResNet-18
(CIFAR stem, width 16; the default) or MobileNet-V2 (width 0.25, depthwise convs) with Zebra thresholds on
random non-negative images. The first run makes a virtual environment (``--venv``, default under the system
temp folder) with ``scalesim==3.0.0`` and ``numpy<2.4`` from PyPI (SCALE-Sim 3.0.0 crashes with NumPy >= 2.4).
Not part of the test suite.

    .venv/bin/python benchmarks/scalesim_check.py [--checkpoint runs/X/zebra/last.pt | --model mobilenet_v2]
                                                  [--images 16] [--out DIR] [--venv DIR] [--array 32] [--sram-kb 64]
                                                  [--dataflow os|ws|is] [--bandwidth 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import tempfile
import venv
from pathlib import Path

import torch
import torchvision

import torchzebra as tz
from torchzebra.accelerator import Accelerator, estimate_layers
from torchzebra.accelerator.spec import BUFFERS
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
InterfaceBandwidth = {mode}
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
Bandwidth = {ofmap_bw}

[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = {ifmap_bw}
IfmapSRAMBankNum = {banks}
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = {filter_bw}
FilterSRAMBankNum = {banks}
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
"""
CALC_LINKS = {"ifmap_bw": 10, "filter_bw": 10, "ofmap_bw": 10, "banks": 10}  # CALC mode reads none of them
RUNNER = ("import sys; from scalesim.scale_sim import scalesim\n"  # one SCALE-Sim run per folder, one process
          "for f in sys.argv[1:]:\n"
          "    scalesim(save_disk_space=True, verbose=False, config=f + '/scale.cfg', topology=f + '/topology.csv', "
          "layout=f + '/layout.csv').run_scale(top_path=f + '/logs')")


MODELS = {"resnet18": lambda: ResNet18(10, 3, 16, "cifar"),
          "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)}


def model_and_batches(checkpoint: Path | None, name: str, images: int) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    """The prepared model and its input batches: a checkpoint's test images, or random ones."""
    if checkpoint is None:
        model = tz.prepare(MODELS[name](), tz.ZebraConfig(block_size=2, threshold=0.1)).eval()
        return model, [torch.randn(images, 3, 32, 32, generator=torch.Generator().manual_seed(0)).relu()]
    from torchzebra.training import open_checkpoint
    opened = open_checkpoint(checkpoint, ["device=cpu"])
    return opened.model, [torch.stack([opened.test_set[i][0] for i in range(images)])]


def scalesim_python(folder: Path) -> Path:
    """The Python of a virtual environment holding SCALE-Sim 3.0.0, made and filled on first use."""
    python = folder / "bin" / "python"
    if not python.exists():
        venv.create(folder, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    return python


def write_run(folder: Path, layers: list[ConvLayer], array: tuple[int, int], sram_kb: int, dataflow: str = "os",
              links: tuple[int, int, int] | None = None) -> Path:
    """A SCALE-Sim run of ``layers`` in ``folder``: topology, layout and config (``CALC`` mode, or ``USER`` mode
    with the IFMAP, filter and OFMAP DRAM links at ``links`` words per cycle)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "topology.csv").write_text(topology_csv(layers))
    (folder / "layout.csv").write_text(layout_csv(layers))
    # SCALE-Sim 3.0.0's USER mode takes the IFMAP and filter links from the [layout] section's bank bandwidths
    # (one bank, so any width divides) and the OFMAP link from Bandwidth
    values = CALC_LINKS if links is None else dict(zip(("ifmap_bw", "filter_bw", "ofmap_bw"), links), banks=1)
    (folder / "scale.cfg").write_text(CONFIG.format(rows=array[0], cols=array[-1], sram=sram_kb, dataflow=dataflow,
                                                    mode="CALC" if links is None else "USER", **values))
    return folder


def run_scalesim(python: Path, folders: list[Path]) -> list[Path]:
    """Run SCALE-Sim on each folder ``write_run`` made (in one process); return their report folders."""
    subprocess.run([str(python), "-c", RUNNER, *map(str, folders)], check=True, stdout=subprocess.DEVNULL)
    return [folder / "logs" / "zebra" for folder in folders]


def read_report(path: Path) -> list[dict[str, str]]:
    """One of SCALE-Sim's report CSVs (its header cells carry spaces and each line a trailing comma)."""
    with open(path) as handle:
        rows = list(csv.reader(handle))
    header = [cell.strip() for cell in rows[0]]
    return [dict(zip(header, (cell.strip() for cell in row))) for row in rows[1:] if row]


def per_layer(layers: list[ConvLayer], reports: Path) -> list[dict[str, int]]:
    """SCALE-Sim's cycles (with stalls; and from the first prefetch on), stalls and DRAM words per topology row
    (a DP row's per-channel layers summed)."""
    compute, access = read_report(reports / "COMPUTE_REPORT.csv"), read_report(reports / "DETAILED_ACCESS_REPORT.csv")
    rows, index = [], 0
    for layer in layers:
        count = layer.channels if layer.depthwise else 1
        pick = range(index, index + count)
        index += count
        rows.append({"cycles": sum(int(compute[i]["Total Cycles"]) for i in pick),
                     "prefetch_cycles": sum(int(compute[i]["Total Cycles (incl. prefetch)"]) for i in pick),
                     "stall_cycles": sum(int(compute[i]["Stall Cycles"]) for i in pick),
                     "ifmap": sum(int(float(access[i]["DRAM IFMAP Reads"])) for i in pick),
                     "filter": sum(int(float(access[i]["DRAM Filter Reads"])) for i in pick),
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
    chunks = parts(layers)  # SCALE-Sim keeps every layer's traces in memory until it ends
    folders = [write_run(out / f"part{index}" if len(chunks) > 1 else out, part, array, sram_kb, dataflow)
               for index, part in enumerate(chunks)]
    simulated = [row for part, reports in zip(chunks, run_scalesim(python, folders))
                 for row in per_layer(part, reports)]
    (out / "layers.csv").write_text(conv_maps_csv(layers, report))
    return layers, simulated, report


def link_widths(layer: ConvLayer, sizes: dict[str, dict[str, float]], fmt: str, bandwidth: int) -> tuple[int, int, int]:
    """SCALE-Sim's IFMAP, filter and OFMAP links in words per cycle for ``layer`` in ``fmt``: ``bandwidth`` each,
    the IFMAP and OFMAP links widened by dense bytes / ``fmt`` bytes of the map the layer reads and writes (a
    compressed map crosses a link as fast as a dense one on a link that much wider); rounded, at least 1."""
    def ratio(site: str) -> float:  # the input image and unmeasured maps move dense
        return sizes[site][fmt] / sizes[site]["dense"] if site in sizes else 1.0

    return max(1, round(bandwidth / ratio(layer.reads))), bandwidth, max(1, round(bandwidth / ratio(layer.writes)))


def simulate_bandwidth(layers: list[ConvLayer], report: tz.TrafficReport, out: Path, python: Path,
                       array: tuple[int, int], sram_kb: int, dataflow: str, bandwidth: int) -> dict[str, list[dict]]:
    """SCALE-Sim's ``USER``-mode cycles per row and format (``link_widths``): one run per row and distinct links."""
    sizes = map_bytes(report)
    plan = {fmt: [link_widths(layer, sizes, fmt, bandwidth) for layer in layers] for fmt in FORMATS}
    runs = sorted({(index, links) for fmt in FORMATS for index, links in enumerate(plan[fmt])})
    folders = [write_run(out / "user" / f"{index:03d}-{'-'.join(map(str, links))}", [layers[index]], array, sram_kb,
                         dataflow, links) for index, links in runs]
    results = {run: per_layer([layers[run[0]]], reports)[0]
               for run, reports in zip(runs, run_scalesim(python, folders))}
    return {fmt: [results[(index, links)] for index, links in enumerate(plan[fmt])] for fmt in FORMATS}


def bandwidth_check(layers: list[ConvLayer], report: tz.TrafficReport, simulated: dict[str, list[dict]],
                    array: tuple[int, int], sram_kb: int, dataflow: str, bandwidth: int) -> dict[str, dict]:
    """Per format: SCALE-Sim's and our network cycles and speed-ups against dense, and the per-row deviation of
    our double-buffered cycles (``max(compute, memory)``) and no-overlap bound from SCALE-Sim's Total Cycles,
    our accelerator having one DRAM link of ``bandwidth`` bytes per cycle."""
    spec = Accelerator("check", array[0], array[-1], dataflow, 1.0, float(bandwidth),
                       {buffer: float(sram_kb) for buffer in BUFFERS}, 0.0, 0.0, 8)
    ours = estimate_layers(layers, report, [spec]).accelerators["check"].layers[:len(layers)]  # no unlinked row
    totals = {fmt: {"scalesim": sum(row["cycles"] for row in simulated[fmt]),
                    "scalesim_prefetch": sum(row["prefetch_cycles"] for row in simulated[fmt]),
                    "ours": sum(layer.formats[fmt].cycles for layer in ours),
                    "ours_serial": sum(layer.formats[fmt].serial_cycles for layer in ours)} for fmt in FORMATS}
    pairs = {"deviation": ("cycles", "cycles"), "serial_deviation": ("serial_cycles", "cycles"),
             "prefetch_deviation": ("cycles", "prefetch_cycles")}  # (our Cost field, SCALE-Sim's column)
    result = {}
    for fmt in FORMATS:
        rows = [{"layer": layer.name, **{f"scalesim_{key}": value for key, value in sim.items()},
                 "ours": mine.formats[fmt].cycles, "ours_serial": mine.formats[fmt].serial_cycles,
                 **{name: getattr(mine.formats[fmt], field) / sim[column] - 1
                    for name, (field, column) in pairs.items()}}
                for layer, sim, mine in zip(layers, simulated[fmt], ours)]
        speedups = {tool: totals["dense"][tool] / totals[fmt][tool] for tool in totals[fmt]}
        result[fmt] = {"cycles": totals[fmt], "speedup": speedups, "rows": rows,
                       **{name: spread([row[name] for row in rows]) for name in pairs}}
    return result


def spread(deviation: list[float]) -> dict[str, float]:
    """The median and max of the absolute deviations."""
    return {"median": statistics.median(map(abs, deviation)), "max": max(map(abs, deviation))}


def print_bandwidth(result: dict[str, dict], bandwidth: int) -> None:
    """One line per format: SCALE-Sim's and our network cycles and speed-ups, and the per-row deviations."""
    print(f"SCALE-Sim's USER mode, its IFMAP, filter and OFMAP DRAM links at {bandwidth} words/cycle each (IFMAP/OFMAP "
          f"widened by each row's byte ratio), against our estimate on one {bandwidth} B/cycle link; network cycles "
          "(speed-up against dense) and |deviation| per row (median / max) of ours from SCALE-Sim's")
    print("format     SCALE-Sim Total Cycles  incl. prefetch     | ours double-buffered   vs Total     vs incl. "
          "prefetch | ours no overlap   vs Total")
    for fmt, r in result.items():
        cycles, speedup = r["cycles"], r["speedup"]
        cells = [f"{cycles[tool]:>9,.0f} ({speedup[tool]:.3f}x)" for tool in cycles]
        devs = [f"{r[name]['median']:>6.1%} / {r[name]['max']:>6.1%}" for name in
                ("deviation", "prefetch_deviation", "serial_deviation")]
        print(f"{fmt:<10} {cells[0]} {cells[1]} | {cells[2]} {devs[0]} {devs[1]} | {cells[3]} {devs[2]}")


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
    parser.add_argument("--dataflow", default="os", choices=("os", "ws", "is"),
                        help="SCALE-Sim's dataflow (default os)")
    parser.add_argument("--bandwidth", type=int, metavar="WORDS",
                        help="also run SCALE-Sim's USER bandwidth mode per format with DRAM links of WORDS (1-byte) "
                             "words per cycle, the IFMAP/OFMAP links widened by each row's byte ratio, and compare "
                             "its cycles with our estimate on one link of WORDS bytes per cycle")
    parser.add_argument("--json", type=Path, help="also write the per-layer cycles and deviations here")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="scalesim-check-"))
    model, batches = model_and_batches(args.checkpoint, args.model, args.images)
    python = scalesim_python(args.venv)
    layers, simulated, report = simulate(model, batches, out, python, args.array, args.sram_kb, args.dataflow)
    print(f"SCALE-Sim 3.0.0, {args.array[0]}x{args.array[-1]} {args.dataflow} array, {args.sram_kb} kB SRAMs, 1-byte "
          f"words; our bytes at 8 bits, per image and access, over {report.images} images; 'ours': the analytical "
          f"compute cycles' deviation from SCALE-Sim's; files in {out}")
    deviation = deviations(layers, simulated, args.array, args.dataflow)
    print_table(layers, simulated, map_bytes(report), deviation)
    compute = spread(deviation)
    print(f"analytical compute cycles against SCALE-Sim's Total Cycles over {len(layers)} rows: median |deviation| "
          f"{compute['median']:.2%}, max {compute['max']:.2%}")
    memory = None
    if args.bandwidth:
        user = simulate_bandwidth(layers, report, out, python, args.array, args.sram_kb, args.dataflow, args.bandwidth)
        memory = bandwidth_check(layers, report, user, args.array, args.sram_kb, args.dataflow, args.bandwidth)
        print_bandwidth(memory, args.bandwidth)
    if args.json:
        rows = [{"layer": layer.name, "scalesim_cycles": sim["cycles"], "deviation": dev}
                for layer, sim, dev in zip(layers, simulated, deviation)]
        args.json.write_text(json.dumps({"model": args.checkpoint and str(args.checkpoint) or args.model,
                                         "array": args.array, "dataflow": args.dataflow, "rows": rows, **compute,
                                         "bandwidth": args.bandwidth, "formats": memory}, indent=1))

if __name__ == "__main__":
    main()
