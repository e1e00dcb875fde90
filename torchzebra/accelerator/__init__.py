"""From measured bytes to an accelerator: per-layer cycles, stalls and DRAM energy (docs/ACCELERATORS.md).

``spec`` reads accelerator descriptions (YAML presets shipped here, or the user's files), ``systolic`` is
SCALE-Sim's analytical runtime, ``work`` gives each conv/linear layer its share of the measured traffic and
``estimate`` turns both into cycles and energy. Names load on first use (the command line lists the presets
without torch).
"""

from .._lazy import lazy_package

__all__ = lazy_package(__name__, {
    "spec": ["DATAFLOWS", "PRESETS", "Accelerator", "AcceleratorError", "load_accelerator",
             "load_accelerators"],
    "systolic": ["Gemm", "compute_cycles"],
    "work": ["LayerWork", "layer_work"],
    "estimate": ["AcceleratorEstimate", "Cost", "Estimate", "LayerEstimate", "estimate", "estimate_layers"],
    "table": ["estimate_text"],
})
