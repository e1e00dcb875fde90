"""Pure tensor functions: blocks, scores, masks, per-format bit counts and penalties. Imports nothing above."""

from .blocks import (
    SCORES,
    BlockSize,
    apply_block_mask,
    block_element_counts,
    block_grid,
    block_mask,
    block_scores,
    block_shape,
    expand_blocks,
    nonzero_blocks,
    validate_block_size,
    validate_score,
)
from .formats import (
    COMPRESSED,
    FORMAT_REGISTRY,
    FORMATS,
    Format,
    MapCounts,
    TrafficTally,
    bits_to_bytes,
    format_bits,
    format_title,
    map_bits,
    map_counts,
    validate_bits,
    validate_format,
)
from .penalty import PENALTIES, block_penalty, validate_penalty

__all__ = [
    "COMPRESSED", "FORMAT_REGISTRY", "FORMATS", "Format", "format_title", "PENALTIES", "SCORES", "BlockSize", "MapCounts", "TrafficTally", "apply_block_mask",
    "bits_to_bytes", "block_element_counts", "block_grid", "block_mask", "block_penalty", "block_scores",
    "block_shape", "expand_blocks", "format_bits", "map_bits", "map_counts", "nonzero_blocks",
    "validate_bits", "validate_block_size", "validate_format", "validate_penalty", "validate_score",
]
