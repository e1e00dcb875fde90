"""Network Slimming (Liu et al. 2017) with real channel removal, composable with Zebra.

``bn_sparsity_step`` trains BatchNorm scales to be sparse; ``plan`` picks the channels to keep with a
global threshold and a per-layer floor; ``prune`` removes them physically (Torch-Pruning's dependency
graph keeps residual and other coupled layers consistent); ``structure``/``restructure`` rebuild a
pruned model's shapes from a checkpoint.
"""

from .groups import ChannelGroup, batchnorms, channel_groups
from .plan import GroupPlan, SlimPlan, plan, validate_min_channels, validate_ratio
from .prune import apply_mask, prune, restructure, structure
from .sparsity import bn_l1, bn_sparsity_step

__all__ = [
    "ChannelGroup", "GroupPlan", "SlimPlan", "apply_mask", "batchnorms", "bn_l1", "bn_sparsity_step",
    "channel_groups", "plan", "prune", "restructure", "structure", "validate_min_channels", "validate_ratio",
]
