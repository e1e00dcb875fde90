"""Blocks of activation maps: tiling, block scores, dynamic masks and their expansion.

Every function here is a pure tensor function on maps of shape ``(N, C, H, W)``. Each channel's
``H x W`` map is tiled into non-overlapping ``b x b`` blocks; border blocks may be partial
(``ceil(H/b) x ceil(W/b)`` blocks in all) and keep their real element count. A block size larger than
the map, or ``"map"``, makes the whole channel map one block.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=256)
def block_element_counts(
    block_size: BlockSize | tuple[int, int], height: int, width: int, device=None
) -> torch.Tensor:
    """Element count of every block of one channel map, shape ``(Hb, Wb)``; partial blocks hold fewer.

    The result is cached and shared: do not modify it in place.
    """
    bh, bw = block_size if isinstance(block_size, tuple) else block_shape(block_size, height, width)
    rows = torch.full((math.ceil(height / bh),), bh, dtype=torch.int64, device=device)
    cols = torch.full((math.ceil(width / bw),), bw, dtype=torch.int64, device=device)
    rows[-1] = height - bh * (rows.numel() - 1)
    cols[-1] = width - bw * (cols.numel() - 1)
    return rows[:, None] * cols[None, :]


_SMALL_GRID = 16  # up to this many blocks per map, masks are expanded with one small matrix product


@functools.lru_cache(maxsize=256)
def _indicator(length: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(length, ceil(length/size))`` 0/1 matrix: element i belongs to block i // size."""
    index = torch.arange(length, device=device)
    return (index[:, None] // size == torch.arange(math.ceil(length / size), device=device)[None, :]).to(dtype)


@functools.lru_cache(maxsize=256)
def _map_indicator(height: int, width: int, bh: int, bw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(Hb*Wb, H*W)`` 0/1 matrix: row k marks the elements of block k of one channel map."""
    return torch.kron(_indicator(height, bh, device, dtype), _indicator(width, bw, device, dtype)).t().contiguous()


@functools.lru_cache(maxsize=256)
def _map_averaging(height: int, width: int, bh: int, bw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(H*W, Hb*Wb)`` matrix whose product with a flattened map gives each block's mean."""
    indicator = _map_indicator(height, width, bh, bw, device, dtype)
    return (indicator / indicator.sum(1, keepdim=True)).t().contiguous()


class _BlockMean(torch.autograd.Function):
    """avg_pool2d forward with a backward that expands instead of scattering (far faster on CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
        ctx.geometry = (bh, bw, *x.shape[-2:])
        # With ceil_mode and no padding, avg_pool2d divides partial border windows by their real size.
        return F.avg_pool2d(x, (bh, bw), (bh, bw), ceil_mode=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        bh, bw, height, width = ctx.geometry
        counts = block_element_counts((bh, bw), height, width, device=grad.device).to(grad.dtype)
        return _expand(grad / counts, bh, bw, height, width), None, None


def _pool(x: torch.Tensor, block: tuple[int, int], kind: str) -> torch.Tensor:
    """Block max or mean of ``x`` (N, C, H, W) -> (N, C, Hb, Wb), by the fastest CPU route for the shape."""
    n, c, height, width = x.shape
    if block == (1, 1):
        return x
    hb, wb = math.ceil(height / block[0]), math.ceil(width / block[1])
    if kind == "max":
        if (hb, wb) == (1, 1):
            return x.amax((-2, -1), keepdim=True)
        return F.max_pool2d(x, block, block, ceil_mode=True)
    if hb * wb <= _SMALL_GRID:  # few blocks per map: one matrix product with the block-averaging matrix
        averaging = _map_averaging(height, width, *block, x.device, x.dtype)
        return (x.reshape(n * c, height * width) @ averaging).view(n, c, hb, wb)
    return _BlockMean.apply(x, *block)


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


def _block_rows(values: torch.Tensor, bw: int, width: int) -> torch.Tensor:
    """(N, C, Hb, Wb) -> (N, C, Hb, 1, W): each block's value repeated along its columns."""
    n, c, hb, wb = values.shape
    rows = values.reshape(n * c * hb, wb) @ _indicator(width, bw, values.device, values.dtype).t()
    return rows.view(n, c, hb, 1, width)


def _expand(values: torch.Tensor, bh: int, bw: int, height: int, width: int) -> torch.Tensor:
    """(N, C, Hb, Wb) floating -> (N, C, H, W), by matrix products (fast on CPU, exact for 0/1 values)."""
    n, c, hb, wb = values.shape
    if (bh, bw) == (1, 1):
        return values
    if hb * wb <= _SMALL_GRID:
        full = values.reshape(n * c, hb * wb) @ _map_indicator(height, width, bh, bw, values.device, values.dtype)
        return full.view(n, c, height, width)
    rows = _block_rows(values, bw, width)
    return rows.expand(n, c, hb, bh, width).reshape(n, c, hb * bh, width)[:, :, :height]


def expand_blocks(values: torch.Tensor, block_size: BlockSize, height: int, width: int) -> torch.Tensor:
    """Expand a per-block tensor ``(N, C, Hb, Wb)`` to per-element ``(N, C, H, W)``."""
    if not values.is_floating_point():
        return expand_blocks(values.float(), block_size, height, width).to(values.dtype)
    return _expand(values, *block_shape(block_size, height, width), height, width)


def apply_block_mask(x: torch.Tensor, mask: torch.Tensor, block_size: BlockSize, inplace: bool = False) -> torch.Tensor:
    """Zero the blocks of ``x`` where ``mask`` is False; kept blocks pass unchanged (bit for bit).

    ``inplace=True`` overwrites ``x`` (only where autograd does not need it). With many blocks per map
    the mask is broadcast over block rows, so no full-size mask is made.
    """
    n, c, height, width = x.shape
    bh, bw = block_shape(block_size, height, width)
    hb, wb = mask.shape[-2:]
    keep = mask.to(x.dtype)
    if hb * wb > _SMALL_GRID and height % bh == 0 and x.is_contiguous():
        blocks = x.view(n, c, hb, bh, width)
        rows = _block_rows(keep, bw, width)
        return (blocks.mul_(rows) if inplace else blocks * rows).view(n, c, height, width)
    full = _expand(keep, bh, bw, height, width)
    return x.mul_(full) if inplace else x * full


def nonzero_blocks(x: torch.Tensor, block_size: BlockSize) -> torch.Tensor:
    """True for every block of ``x`` that holds at least one non-zero element, shape ``(N, C, Hb, Wb)``."""
    return block_scores((x != 0).to(torch.float32), block_size, "mean", nonnegative=True) > 0
