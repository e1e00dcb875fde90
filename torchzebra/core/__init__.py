"""Pure tensor functions: blocks, scores, masks, per-format bit counts and penalties. Imports nothing above.

Names load on first use: the format registry (``core.registry``) is torch-free, the rest needs torch.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_package

if TYPE_CHECKING:  # the names below, for type checkers, IDEs and readers; at run time each loads on first use
    from .blocks import (
        SCORES,
        BlockSize,
        apply_block_mask,
        block_element_counts,
        block_grid,
        block_keep,
        block_magnitude_sums,
        block_mask,
        block_nonzero_counts,
        block_scores,
        block_shape,
        expand_blocks,
        is_channels_last,
        nonzero_blocks,
        validate_block_size,
        validate_score,
    )
    from .formats import MapCounts, TrafficTally, bits_to_bytes, format_bits, map_bits, map_counts
    from .fused import fused_kernels, fused_kernels_enabled, masked_activation, set_fused_kernels
    from .penalty import PENALTIES, block_penalty, penalty_from_moments, validate_penalty
    from .quantile import quantile
    from .registry import COMPRESSED, FORMAT_REGISTRY, FORMATS, Format, format_title, validate_bits, validate_format

__all__ = lazy_package(__name__, {
    "blocks": ["SCORES", "BlockSize", "apply_block_mask", "block_element_counts", "block_grid", "block_mask",
               "block_keep", "block_magnitude_sums", "block_nonzero_counts", "block_scores", "block_shape",
               "expand_blocks", "nonzero_blocks", "is_channels_last", "validate_block_size", "validate_score"],
    "registry": ["COMPRESSED", "FORMAT_REGISTRY", "FORMATS", "Format", "format_title", "validate_bits",
                 "validate_format"],
    "formats": ["MapCounts", "TrafficTally", "bits_to_bytes", "format_bits", "map_bits", "map_counts"],
    "penalty": ["PENALTIES", "block_penalty", "penalty_from_moments", "validate_penalty"],
    "quantile": ["quantile"],
    "fused": ["fused_kernels", "fused_kernels_enabled", "masked_activation", "set_fused_kernels"],
})
