"""From measured bytes to an accelerator: per-layer cycles, stalls and DRAM energy (docs/ACCELERATORS.md).

``spec`` reads accelerator descriptions (YAML presets shipped here, or the user's files), ``systolic`` is
SCALE-Sim's analytical runtime, ``work`` gives each conv/linear layer its share of the measured traffic,
``cost`` turns both into cycles and energy, ``estimate`` does it for a model (against a baseline model's),
``curves`` sweeps the bandwidth and the batch and ``story`` says in a line why a traffic cut saves less energy.
Names load on first use (the command line lists the presets without torch).
"""

from .._lazy import lazy_package

__all__ = lazy_package(__name__, {
    "spec": ["DATAFLOWS", "PRESETS", "Accelerator", "AcceleratorError", "load_accelerator",
             "load_accelerators"],
    "systolic": ["Gemm", "compute_cycles"],
    "work": ["LayerWork", "layer_work"],
    "cost": ["AcceleratorEstimate", "Cost", "Estimate", "LayerEstimate"],
    "estimate": ["estimate", "estimate_layers"],
    "curves": ["MARGIN", "break_even"],
    "story": ["energy_story"],
    "table": ["estimate_text"],
})
