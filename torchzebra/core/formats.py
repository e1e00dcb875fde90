"""Bits on the DRAM bus for one activation map in each storage format (docs/METHOD.md section 3).

For one map (one image's ``C x H x W`` activation) with ``E`` elements, ``B`` blocks and data width
``q`` bits:

======== ===============================================
dense     ``E*q``
zvc       ``E + nnz*q``             (one bit per element, then the non-zero values)
zebra     ``B + nzbe*q``            (one bit per block, then every element of every non-zero block)
zebra_zvc ``B + nzbe + nnz*q``      (block bitmap, then ZVC inside the non-zero blocks)
======== ===============================================

``nzbe`` is the element count of the non-zero blocks (partial border blocks count their real size).
Metadata is always counted; bytes are bits rounded up per map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ZebraError
from .blocks import BlockSize, block_element_counts, block_grid, block_nonzero_counts
from .registry import FORMATS, validate_bits


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() != 4:
        raise ZebraError(f"an activation map must be (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    return x


@dataclass(frozen=True)
class MapCounts:
    """Element and block counts of each map of a batch; the tensors have one entry per map (image)."""

    elements: int  # E = C*H*W
    blocks: int  # B = C * ceil(H/b) * ceil(W/b)
    nonzero: torch.Tensor  # nnz
    nonzero_blocks: torch.Tensor  # blocks holding at least one non-zero element
    nonzero_block_elements: torch.Tensor  # nzbe: elements inside those blocks


def map_counts(x: torch.Tensor, block_size: BlockSize, per_block: torch.Tensor | None = None) -> MapCounts:
    """Count elements, non-zeros, blocks and non-zero blocks of each map of ``x`` ((C,H,W) or (N,C,H,W)).

    ``per_block``: the blocks' non-zero counts where they are known already (the fused kernels count them).
    """
    x = _as_batch(x)
    _, channels, height, width = x.shape
    hb, wb = block_grid(block_size, height, width)
    per_block = block_nonzero_counts(x, block_size) if per_block is None else per_block.to(torch.int64)
    occupied = per_block > 0
    sizes = block_element_counts(block_size, height, width, device=x.device)
    return MapCounts(
        elements=channels * height * width,
        blocks=channels * hb * wb,
        nonzero=per_block.flatten(1).sum(1),
        nonzero_blocks=occupied.flatten(1).sum(1),
        nonzero_block_elements=(occupied * sizes).flatten(1).sum(1),
    )


def format_bits(counts: MapCounts, bits: int = 8) -> dict[str, torch.Tensor]:
    """Bits of each map in every format of ``FORMATS``, from its counts, at data width ``bits``."""
    q = validate_bits(bits)
    dense = torch.full_like(counts.nonzero, counts.elements * q)
    return {
        "dense": dense,
        "zvc": counts.elements + counts.nonzero * q,
        "zebra": counts.blocks + counts.nonzero_block_elements * q,
        "zebra_zvc": counts.blocks + counts.nonzero_block_elements + counts.nonzero * q,
    }


def map_bits(x: torch.Tensor, block_size: BlockSize, bits: int = 8) -> dict[str, torch.Tensor]:
    """Bits of each map of ``x`` in every format; one entry per map."""
    return format_bits(map_counts(x, block_size), bits)


def bits_to_bytes(bits: torch.Tensor | int) -> torch.Tensor | int:
    """Whole bytes needed for ``bits`` (rounded up, per map)."""
    return (bits + 7) // 8


@dataclass
class TrafficTally:
    """Running per-layer totals over many maps, kept on the maps' device (no host sync per batch).

    ``shape`` is the ``(C, H, W)`` of the maps, or None when maps of several shapes were counted.
    """

    block_size: BlockSize
    bits: int = 8
    maps: int = 0
    shape: tuple[int, ...] | None = None
    elements: int = 0
    blocks: int = 0
    nonzero: torch.Tensor | int = 0
    nonzero_blocks: torch.Tensor | int = 0
    nonzero_block_elements: torch.Tensor | int = 0
    map_bytes: dict[str, torch.Tensor | int] = field(default_factory=lambda: dict.fromkeys(FORMATS, 0))

    def add(self, x: torch.Tensor, per_block: torch.Tensor | None = None) -> None:
        """Count the maps of ``x`` ((N, C, H, W)) into the totals (``per_block``: see ``map_counts``)."""
        shape = tuple(x.shape[1:])
        self.shape = shape if self.maps == 0 or shape == self.shape else None
        counts = map_counts(x, self.block_size, per_block)
        n = x.shape[0]
        self.maps += n
        self.elements += n * counts.elements
        self.blocks += n * counts.blocks
        self.nonzero = self.nonzero + counts.nonzero.sum()
        self.nonzero_blocks = self.nonzero_blocks + counts.nonzero_blocks.sum()
        self.nonzero_block_elements = self.nonzero_block_elements + counts.nonzero_block_elements.sum()
        for fmt, per_map in format_bits(counts, self.bits).items():
            self.map_bytes[fmt] = self.map_bytes[fmt] + bits_to_bytes(per_map).sum()
