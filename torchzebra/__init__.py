"""torchzebra: zero block regularization of activation maps, and honest DRAM traffic accounting.

``prepare`` instruments a CNN so that blocks of its activation maps whose score is at most a per-layer
threshold are zeroed; ``zero_block_loss`` trains the network to put its information in few blocks;
``measure`` counts the DRAM traffic of every map in dense, ZVC, Zebra and Zebra+ZVC formats.
"""

from . import core
from .calibrate import calibrate
from .config import ZebraConfig
from .core import FORMATS
from .measure import LayerTraffic, TrafficReport, measure
from .nn import ZebraLayer, eval_mode, is_prepared, plain_model, prepare, remove, set_masking, zebra_layers
from .regularizer import zero_block_loss

__version__ = "0.1.0"

__all__ = [
    "FORMATS", "LayerTraffic", "TrafficReport", "ZebraConfig", "ZebraLayer", "calibrate", "core", "eval_mode",
    "is_prepared", "measure", "plain_model", "prepare", "remove", "set_masking", "zebra_layers", "zero_block_loss",
]
