"""From measured bytes to an accelerator: per-layer cycles, stalls and DRAM energy (docs/ACCELERATORS.md).

``spec`` reads accelerator descriptions (YAML presets shipped here, or the user's files), ``systolic`` is
SCALE-Sim's analytical runtime, ``work`` gives each conv/linear layer its share of the measured traffic,
``cost`` turns both into cycles and energy, ``estimate`` does it for a model (against a baseline model's),
``curves`` sweeps the bandwidth and the batch and ``story`` says in a line why a traffic cut saves less energy.
Names load on first use (the command line lists the presets without torch).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:  # the names below, for type checkers, IDEs and readers; at run time each loads on first use
    from .cost import AcceleratorEstimate, Cost, LayerEstimate
    from .curves import MARGIN, break_even
    from .estimate import Estimate, estimate, estimate_layers
    from .spec import DATAFLOWS, PRESETS, Accelerator, AcceleratorError, load_accelerator, load_accelerators
    from .story import energy_story
    from .systolic import Gemm, compute_cycles
    from .table import estimate_text
    from .work import LayerWork, layer_work

__all__ = lazy_package(__name__, {
    "spec": ["DATAFLOWS", "PRESETS", "Accelerator", "AcceleratorError", "load_accelerator",
             "load_accelerators"],
    "systolic": ["Gemm", "compute_cycles"],
    "work": ["LayerWork", "layer_work"],
    "cost": ["AcceleratorEstimate", "Cost", "LayerEstimate"],
    "estimate": ["Estimate", "estimate", "estimate_layers"],
    "curves": ["MARGIN", "break_even"],
    "story": ["energy_story"],
    "table": ["estimate_text"],
})
