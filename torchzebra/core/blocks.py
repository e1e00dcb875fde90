"""Blocks of activation maps: tiling, block scores, dynamic masks and their expansion.

Every function here is a pure tensor function on maps of shape ``(N, C, H, W)``. Each channel's
``H x W`` map is tiled into non-overlapping ``b x b`` blocks; border blocks may be partial
(``ceil(H/b) x ceil(W/b)`` blocks in all) and keep their real element count. A block size larger than
the map, or ``"map"``, makes the whole channel map one block.
"""

from __future__ import annotations

import math
from typing import Literal, Union

import torch
import torch.nn.functional as F

BlockSize = Union[int, Literal["map"]]
SCORES = ("mean", "max", "rms")


def validate_block_size(block_size: object, name: str = "block_size") -> BlockSize:
    """Return ``block_size`` if it is a positive int or ``"map"``, else raise a ``ValueError`` naming it."""
    if block_size == "map":
        return "map"
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(
            f"{name}={block_size!r} is invalid: use a positive integer (1, 2, 4, 8, 16, ...; a size larger "
            f"than the map makes the whole map one block) or 'map'"
        )
    return block_size


def validate_score(score: object) -> str:
    """Return ``score`` if it names a block score in ``SCORES``, else raise a ``ValueError``."""
    if score not in SCORES:
        raise ValueError(f"score={score!r} is invalid: use one of {', '.join(SCORES)}")
    return score  # type: ignore[return-value]


def block_shape(block_size: BlockSize, height: int, width: int) -> tuple[int, int]:
    """The (rows, cols) of one full block on an ``height x width`` map; clipped to the map."""
    if block_size == "map":
        return height, width
    return min(block_size, height), min(block_size, width)


def block_grid(block_size: BlockSize, height: int, width: int) -> tuple[int, int]:
    """Number of blocks along each axis, partial border blocks included."""
    bh, bw = block_shape(block_size, height, width)
    return math.ceil(height / bh), math.ceil(width / bw)


def block_element_counts(block_size: BlockSize, height: int, width: int, device=None) -> torch.Tensor:
    """Element count of every block of one channel map, shape ``(Hb, Wb)``; partial blocks hold fewer."""
    bh, bw = block_shape(block_size, height, width)
    rows = torch.full((math.ceil(height / bh),), bh, dtype=torch.int64, device=device)
    cols = torch.full((math.ceil(width / bw),), bw, dtype=torch.int64, device=device)
    rows[-1] = height - bh * (rows.numel() - 1)
    cols[-1] = width - bw * (cols.numel() - 1)
    return rows[:, None] * cols[None, :]


def _pool(x: torch.Tensor, block: tuple[int, int], kind: str) -> torch.Tensor:
    if kind == "max":
        return F.max_pool2d(x, block, block, ceil_mode=True)
    # With ceil_mode and no padding, avg_pool2d divides partial border windows by their real size.
    return F.avg_pool2d(x, block, block, ceil_mode=True)


def block_scores(
    x: torch.Tensor, block_size: BlockSize, score: str = "mean", nonnegative: bool = False
) -> torch.Tensor:
    """Score of every block of ``x`` (N, C, H, W): mean |x|, max |x| or RMS, shape ``(N, C, Hb, Wb)``.

    ``nonnegative=True`` promises ``x >= 0`` (ReLU outputs) and skips the ``abs``.
    """
    block = block_shape(block_size, x.shape[-2], x.shape[-1])
    if score == "rms":
        return _pool(x * x, block, "mean").sqrt()
    magnitude = x if nonnegative else x.abs()
    return _pool(magnitude, block, "max" if score == "max" else "mean")


def block_mask(scores: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The dynamic mask: True where a block is kept (``score > threshold``)."""
    return scores > threshold


def expand_blocks(mask: torch.Tensor, block_size: BlockSize, height: int, width: int) -> torch.Tensor:
    """Expand a per-block tensor ``(N, C, Hb, Wb)`` to per-element ``(N, C, H, W)``."""
    bh, bw = block_shape(block_size, height, width)
    full = mask.repeat_interleave(bh, dim=-2).repeat_interleave(bw, dim=-1)
    return full[..., :height, :width]


def apply_block_mask(x: torch.Tensor, mask: torch.Tensor, block_size: BlockSize) -> torch.Tensor:
    """Zero the blocks of ``x`` where ``mask`` is False; kept blocks pass unchanged (bit for bit)."""
    n, c, height, width = x.shape
    bh, bw = block_shape(block_size, height, width)
    keep = mask.to(x.dtype)
    if height % bh == 0 and width % bw == 0:
        # Broadcast over a block view: no full-size mask is ever materialised.
        hb, wb = height // bh, width // bw
        out = x.reshape(n, c, hb, bh, wb, bw) * keep.reshape(n, c, hb, 1, wb, 1)
        return out.reshape(n, c, height, width)
    return x * expand_blocks(keep, block_size, height, width)


def nonzero_blocks(x: torch.Tensor, block_size: BlockSize) -> torch.Tensor:
    """True for every block of ``x`` that holds at least one non-zero element, shape ``(N, C, Hb, Wb)``."""
    block = block_shape(block_size, x.shape[-2], x.shape[-1])
    return _pool((x != 0).to(torch.float32), block, "max") > 0
