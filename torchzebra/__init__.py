"""torchzebra: zero block regularization of activation maps, and honest DRAM traffic accounting.

``prepare`` instruments a CNN so that blocks of its activation maps whose score is at most a per-layer
threshold are zeroed; ``zero_block_loss`` trains the network to put its information in few blocks;
``measure`` counts the DRAM traffic of every map in dense, ZVC, Zebra and Zebra+ZVC formats; ``estimate``
turns it into cycles, stalls and energy on an accelerator; ``import_model`` reads a model trained elsewhere.
Names load on first use (``import torchzebra`` alone does not import torch).
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_package

if TYPE_CHECKING:  # the names below, for type checkers, IDEs and readers; at run time each loads on first use
    from .accelerator import estimate
    from .analysis.calibrate import calibrate
    from .analysis.measure import LayerTraffic, TrafficReport, measure
    from .analysis.regularizer import zero_block_loss
    from .core import FORMATS
    from .errors import ZebraError
    from .nn import (
        ZebraConfig,
        ZebraLayer,
        eval_mode,
        is_prepared,
        plain_model,
        prepare,
        remove,
        set_masking,
        set_penalty,
        zebra_layers,
    )
    from .recipe import ZebraRecipe
    from .workflows.importing import import_model

__version__ = "0.1.0"

__all__ = lazy_package(__name__, {
    "accelerator": ["estimate"],
    "core": ["FORMATS"],
    "analysis.calibrate": ["calibrate"],
    "errors": ["ZebraError"],
    "analysis.measure": ["LayerTraffic", "TrafficReport", "measure"],
    "nn": ["ZebraConfig", "ZebraLayer", "eval_mode", "is_prepared", "plain_model", "prepare", "remove", "set_masking",
           "set_penalty", "zebra_layers"],
    "recipe": ["ZebraRecipe"],
    "analysis.regularizer": ["zero_block_loss"],
    "workflows.importing": ["import_model"],
})
