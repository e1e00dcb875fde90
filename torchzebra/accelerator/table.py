"""The terminal table of an estimate: per accelerator, the network per format, then cycles per layer."""

from __future__ import annotations

from ..core import FORMATS, format_title
from .estimate import AcceleratorEstimate, Estimate


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows as aligned text: the first column left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in rows]


def accelerator_title(result: AcceleratorEstimate) -> str:
    """One line saying what the accelerator is."""
    a = result.accelerator
    sram = "/".join(f"{a.sram_kb[b]:g}" for b in ("ifmap", "filter", "ofmap"))
    return (f"{a.name}: {a.rows}x{a.cols} {a.dataflow} array at {a.clock_ghz:g} GHz, DRAM {a.dram_gbps:g} GB/s "
            f"({a.bytes_per_cycle:.3g} B/cycle), SRAM ifmap/filter/ofmap {sram} KB, {a.pj_per_mac:g} pJ/MAC, "
            f"{a.pj_per_dram_bit:g} pJ/DRAM bit")


def network_rows(result: AcceleratorEstimate) -> list[str]:
    """The whole network per format: cycles, stalls, time, speed-up, DRAM bytes and energy, savings."""
    clock = result.accelerator.clock_ghz
    rows = [["format", "cycles", "stall", "ms", "speed-up", "DRAM KB", "DRAM uJ", "energy uJ", "saving"]]
    for fmt in FORMATS:
        cost = result.total(fmt)
        rows.append([format_title(fmt), f"{cost.cycles:,}", f"{cost.stall_cycles / cost.cycles:.0%}",
                     f"{cost.cycles / clock / 1e6:.3f}", f"{result.speedup(fmt):.2f}x", f"{cost.dram_bytes / 1024:,.1f}",
                     f"{cost.dram_energy_uj:,.1f}", f"{cost.energy_uj:,.1f}", f"{result.saving(fmt):.1%}"])
    return _columns(rows)


def layer_rows(result: AcceleratorEstimate) -> list[str]:
    """Cycles per layer and format; ``*`` marks a layer that waits for DRAM in that format."""
    rows = [["layer", "MACs", "compute", *(format_title(fmt) for fmt in FORMATS)]]
    for layer in result.layers:
        cells = [f"{c.cycles:,}{'*' if c.stall_cycles else ' '}" for c in (layer.formats[f] for f in FORMATS)]
        rows.append([layer.name, f"{layer.macs:,}", f"{layer.compute_cycles:,}", *cells])
    return _columns(rows)


def estimate_text(estimate: Estimate) -> str:
    """Every accelerator's network table and layer table."""
    where = "maps that fit in the buffers stay on chip" if estimate.on_chip else "every map goes to DRAM"
    lines = [f"Accelerator estimate per image (mean of {estimate.images} measured images, {estimate.bits}-bit "
             f"activations; {where}); speed-up and saving against dense"]
    for result in estimate.accelerators.values():
        lines += ["", accelerator_title(result), *network_rows(result),
                  "cycles per layer (* waits for DRAM: memory-bound in that format)", *layer_rows(result)]
    return "\n".join(lines)
