"""Zero-block penalties of one activation map: differentiable, normalised per layer.

Each penalty is a mean over all blocks of the batch, so layers of different size are comparable and
the value does not grow with the batch size:

- ``group_lasso`` (default): mean block RMS, i.e. block L2 norm / sqrt(block elements); an L2,1 group
  penalty that drives whole blocks to exactly zero.
- ``l1``: mean of block mean |x| (the block score of the mask).
- ``l2``: mean of block mean x^2.
"""

from __future__ import annotations

import math

import torch

from ..errors import ZebraError
from .blocks import BlockSize, accumulation_dtype, block_scores, block_shape, is_channels_last, recorded_or_transformed

PENALTIES = ("group_lasso", "l1", "l2")
_EPS = 1e-12  # keeps the gradient of sqrt finite (zero) at an all-zero block


def validate_penalty(kind: object) -> str:
    """Return ``kind`` if it names a penalty in ``PENALTIES``, else raise a ``ValueError``."""
    if kind not in PENALTIES:
        raise ZebraError(f"penalty={kind!r} is invalid: use one of {', '.join(PENALTIES)}")
    return kind  # type: ignore[return-value]


def block_penalty(x: torch.Tensor, block_size: BlockSize, kind: str = "group_lasso",
                  nonnegative: bool = False, sums: torch.Tensor | None = None) -> torch.Tensor:
    """The zero-block penalty of ``x`` (N, C, H, W) as a scalar tensor (see module docstring).

    ``nonnegative=True`` promises ``x >= 0`` (a ReLU's output): ``l1`` then takes ``x`` for ``|x|`` and skips
    the ``abs`` and its backward. Its gradient at an exact zero is then 1/n instead of 0, which the ReLU's own
    backward discards, so parameters get the same gradients. ``sums``: the map's ``block_magnitude_sums``, which
    the mask took already; the l1 penalty of a non-negative map in equal blocks is then their total over the
    map's size, with no pass over the map (the gradient is the same broadcast 1/n; the value differs from a mean
    over the map only in its last bits).
    """
    validate_penalty(kind)
    if kind == "l1":
        bh, bw = block_shape(block_size, x.shape[-2], x.shape[-1])
        if x.shape[-2] % bh == 0 and x.shape[-1] % bw == 0:  # equal blocks: the mean of block means is the mean
            if sums is not None and nonnegative and x.requires_grad and not recorded_or_transformed():
                return _LayoutMean.apply(x, sums.sum())
            return _mean(x if nonnegative else x.abs())
        return block_scores(x, block_size, "mean", nonnegative).mean()
    wide = x.to(accumulation_dtype(x))  # in float16 x*x overflows and 1e-12 rounds to 0
    return penalty_from_moments(block_scores(wide * wide, block_size, "mean", nonnegative=True), kind)


class _LayoutMean(torch.autograd.Function):
    """``x.mean()`` whose gradient is a broadcast view: autograd's own is a new contiguous map, and adding that to
    a channels_last gradient costs several times a plain add on the CPU; the view is added in the layout of the
    other gradient. Given ``total`` (the sum of ``x``, taken elsewhere), the mean is ``total / n``: no pass over
    ``x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return x.mean() if total is None else (total / x.numel()).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        gradient = (grad / math.prod(ctx.shape)).to(ctx.dtype).expand(ctx.shape)  # a broadcast view: no full write
        return gradient, None


def _mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x``; on a channels_last map in eager mode, with a gradient that keeps its layout."""
    if x.requires_grad and is_channels_last(x) and not recorded_or_transformed():
        return _LayoutMean.apply(x)
    return x.mean()


def penalty_from_moments(moments: torch.Tensor, kind: str) -> torch.Tensor:
    """The penalty from every block's moment: its mean |x| for ``l1``, its mean x*x for ``l2`` and ``group_lasso``
    (the fused kernels hand back these moments; one formula for both paths)."""
    if kind == "group_lasso":
        return (moments + _EPS).sqrt().mean()
    return moments.mean()
