"""The terminal table of an estimate: per accelerator, its settings, the network per model and format (against
dense, and against the baseline model's dense and ZVC when there is one), the break-even point and the energy
story, then cycles per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import FORMATS, format_title
from .cost import BASELINE_FORMATS, AcceleratorEstimate, Cost, compare
from .story import energy_story

if TYPE_CHECKING:  # an annotation only: estimate.py imports this module
    from .estimate import Estimate

KIB = 1024  # every byte column: KiB, 1024 bytes


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows as aligned text: the first column left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in rows]


def accelerator_title(result: AcceleratorEstimate, bits: int) -> str:
    """One line with every setting that shapes the figures (``bits``: the traffic report's bit width)."""
    a = result.accelerator
    sram = "/".join(f"{a.sram_kb[b]:g}" for b in ("ifmap", "filter", "ofmap"))
    weights = f"weight_bits {a.weight_bits}" if a.weight_bits else f"weights at the report's {bits} bits"
    return (f"{a.name}: {a.rows}x{a.cols} {a.dataflow} array at {a.clock_ghz:g} GHz, DRAM {a.dram_gbps:g} GB/s "
            f"({a.bytes_per_cycle:.3g} B/cycle, {a.bytes_per_cycle / a.macs_per_cycle:.3g} B/MAC), SRAM "
            f"ifmap/filter/ofmap {sram} KiB, {a.pj_per_mac:g} pJ/MAC, {a.pj_per_dram_bit:g} pJ/DRAM bit, {weights}, "
            f"batch {result.batch} (weights read once per batch)")


def _cells(cost: Cost, clock: float) -> list[str]:
    """Cycles, stall share, time, DRAM KiB and energy per image of one cost."""
    return [f"{cost.cycles:,.0f}", f"{cost.stall_cycles / cost.cycles:.0%}", f"{cost.cycles / clock / 1e6:.3f}",
            f"{cost.dram_bytes / KIB:,.1f}", f"{cost.dram_energy_uj:,.1f}", f"{cost.energy_uj:,.1f}"]


def _against(cost: Cost, reference: Cost) -> list[str]:
    """Speed-up and energy saving against ``reference``."""
    figures = compare(cost, reference)
    return [f"{figures['speedup']:.2f}x", f"{figures['energy_saving']:.1%}"]


def network_rows(result: AcceleratorEstimate) -> list[str]:
    """The whole network per model and format: cycles, stalls, time, DRAM bytes and energy, then speed-up and saving
    against dense (the baseline's dense, with a baseline) and against the baseline's ZVC."""
    clock, base = result.accelerator.clock_ghz, result.baseline
    references = [base.total(ref) for ref in BASELINE_FORMATS] if base else [result.total("dense")]
    titles = ["vs base dense", "saving", "vs base ZVC", "saving"] if base else ["speed-up", "saving"]
    rows = [["model, format", "cycles", "stall", "ms", "DRAM KiB/image", "DRAM uJ", "energy uJ", *titles]]
    named = [(f"baseline, {format_title(ref)}", base.total(ref)) for ref in BASELINE_FORMATS] if base else []
    named += [(f"{'Zebra model, ' if base else ''}{format_title(fmt)}", result.total(fmt)) for fmt in FORMATS]
    for name, cost in named:
        rows.append([name, *_cells(cost, clock), *(cell for ref in references for cell in _against(cost, ref))])
    return _columns(rows)


def break_even_line(result: AcceleratorEstimate) -> str:
    """Where the Zebra model in Zebra+ZVC starts to pay against the baseline in ZVC (needs a baseline)."""
    if result.curves is None:
        raise ValueError("break_even_line() needs an estimate made with a baseline model (it has the curves)")
    point, margin = result.curves["break_even"], result.curves["margin"]
    if point["dram_gbps"] is None:
        return f"break-even ({margin:.2f}x over the baseline's ZVC, batch {point['batch']}): none: {point['reason']}"
    return (f"break-even: Zebra+ZVC is {margin:.2f}x faster than the baseline's ZVC at batch {point['batch']} below "
            f"{point['dram_gbps']:.3g} GB/s ({point['bytes_per_mac']:.3g} B/MAC; this accelerator: "
            f"{result.accelerator.dram_gbps:g} GB/s)")


def layer_rows(result: AcceleratorEstimate) -> list[str]:
    """Cycles per layer and format; ``*`` marks a layer that waits for DRAM in that format."""
    rows = [["layer", "MACs", "compute", *(format_title(fmt) for fmt in FORMATS)]]
    for layer in result.layers:
        cells = [f"{c.cycles:,.0f}{'*' if c.stall_cycles else ' '}" for c in (layer.formats[f] for f in FORMATS)]
        rows.append([layer.name, f"{layer.macs:,}", f"{layer.compute_cycles:,}", *cells])
    return _columns(rows)


def estimate_text(estimate: Estimate) -> str:
    """Every accelerator's settings, network table, break-even point, energy story and layer table."""
    where = "maps that fit in the buffers stay on chip" if estimate.on_chip else "every map goes to DRAM"
    against = "the baseline model's dense and ZVC" if estimate.baseline_bits else "dense"
    lines = [f"Accelerator estimate per image (mean of {estimate.images} measured images, {estimate.bits}-bit "
             f"activations; {where}); speed-up and saving against {against}"]
    for result in estimate.accelerators.values():
        lines += ["", accelerator_title(result, estimate.bits), *network_rows(result)]
        lines += [break_even_line(result)] if result.baseline else []
        model = " of the Zebra model" if result.baseline else ""
        lines += [energy_story(result), f"cycles per layer{model} (* waits for DRAM: memory-bound in that format)",
                  *layer_rows(result)]
    return "\n".join(lines)
