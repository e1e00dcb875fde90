"""Blocks of activation maps: tiling, block scores, dynamic masks and their expansion.

Every function here is a pure tensor function on maps of shape ``(N, C, H, W)``. Each channel's
``H x W`` map is tiled into non-overlapping ``b x b`` blocks; border blocks may be partial
(``ceil(H/b) x ceil(W/b)`` blocks in all) and keep their real element count. A block size larger than
the map, or ``"map"``, makes the whole channel map one block.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, Literal, Union

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

from .._checks import choice, whole

BlockSize = Union[int, Literal["map"]]
SCORES = ("mean", "max", "rms")


def validate_block_size(block_size: object, name: str = "block_size") -> BlockSize:
    """Return ``block_size`` if it is a positive int or ``"map"``, else raise a ``ValueError`` naming it."""
    if block_size == "map":
        return "map"
    return whole(block_size, name, least=1, expected="use a positive integer (1, 2, 4, 8, 16, ...; a size larger "
                 "than the map makes the whole map one block) or 'map'")


def validate_score(score: object) -> str:
    """Return ``score`` if it names a block score in ``SCORES``, else raise a ``ValueError``."""
    return choice(score, "score", SCORES)


def block_shape(block_size: BlockSize, height: int, width: int) -> tuple[int, int]:
    """The (rows, cols) of one full block on an ``height x width`` map; clipped to the map."""
    if block_size == "map":
        return height, width
    return min(block_size, height), min(block_size, width)


def block_grid(block_size: BlockSize, height: int, width: int) -> tuple[int, int]:
    """Number of blocks along each axis, partial border blocks included."""
    bh, bw = block_shape(block_size, height, width)
    return math.ceil(height / bh), math.ceil(width / bw)


def _tensor_cache(make: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``lru_cache`` for a maker of constant tensors, bypassed while tracing (a cached fake tensor would leak)."""
    cached = functools.lru_cache(maxsize=256)(make)

    @functools.wraps(make)
    def call(*args, **kwargs) -> torch.Tensor:
        return make(*args, **kwargs) if torch.compiler.is_compiling() else cached(*args, **kwargs)

    return call


@_tensor_cache
def block_element_counts(
    block_size: BlockSize | tuple[int, int], height: int, width: int, device=None, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """Element count of every block of one channel map, shape ``(Hb, Wb)``; partial blocks hold fewer.

    The result is cached and shared: do not modify it in place.
    """
    bh, bw = block_size if isinstance(block_size, tuple) else block_shape(block_size, height, width)
    rows = torch.full((math.ceil(height / bh),), bh, dtype=torch.int64, device=device)
    cols = torch.full((math.ceil(width / bw),), bw, dtype=torch.int64, device=device)
    rows[-1] = height - bh * (rows.numel() - 1)
    cols[-1] = width - bw * (cols.numel() - 1)
    return (rows[:, None] * cols[None, :]).to(dtype)


_SMALL_GRID = 16  # up to this many blocks per map, masks are expanded with one small matrix product


@_tensor_cache
def _indicator(length: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(length, ceil(length/size))`` 0/1 matrix: element i belongs to block i // size."""
    index = torch.arange(length, device=device)
    return (index[:, None] // size == torch.arange(math.ceil(length / size), device=device)[None, :]).to(dtype)


@_tensor_cache
def _map_indicator(height: int, width: int, bh: int, bw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(Hb*Wb, H*W)`` 0/1 matrix: row k marks the elements of block k of one channel map."""
    rows, cols = _indicator(height, bh, device, dtype), _indicator(width, bw, device, dtype)
    # the Kronecker product of the two, as a broadcast product (ONNX's legacy exporter has no aten::kron)
    return (rows[:, None, :, None] * cols[None, :, None, :]).reshape(height * width, -1).t().contiguous()


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that turns autocast off on ``device`` while it is on there."""
    on = torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)
    return torch.autocast(device.type, enabled=False) if on else contextlib.nullcontext()


def recorded_or_transformed() -> bool:
    """Whether PyTorch records or transforms the ops rather than just running them: torch.compile, torch.export,
    torch.jit.trace, torch.func transforms, forward-mode AD. There, custom autograd Functions, in-place writes
    into strided views and Triton kernels give way to plain PyTorch ops."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._are_functorch_transforms_active()
            or forward_ad._current_level >= 0)


def _plain_views(x: torch.Tensor) -> bool:
    """Whether to use plain reductions and broadcasts over block views: on a GPU (one kernel each), under
    torch.compile (which fuses them with the op that wrote ``x``; on the CPU a compiled ResNet-18 step costs
    less with them than with the eager CPU paths below, see docs/PERFORMANCE.md), and wherever else the ops are
    recorded or transformed (ONNX's legacy exporter mishandles strided in-place writes; torch.func and
    forward-mode AD refuse the custom autograd Functions). Eager CPU code keeps the strided sums and row-by-row
    products below, which beat these views there."""
    return recorded_or_transformed() or x.device.type != "cpu"


def _padded_blocks(x: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """``x`` (N, C, H, W) zero-padded to whole blocks and viewed as (N, C, Hb, bh, Wb, bw)."""
    n, c, height, width = x.shape
    hb, wb = math.ceil(height / bh), math.ceil(width / bw)
    if height % bh or width % bw:
        x = F.pad(x, (0, wb * bw - width, 0, hb * bh - height))
    return x.reshape(n, c, hb, bh, wb, bw)


def _sum_blocks(x: torch.Tensor, bh: int, bw: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sum of every ``bh x bw`` block of ``x`` (N, C, H, W) -> (N, C, Hb, Wb) in ``dtype`` (default: that of
    ``x``), each from its own block only.

    Block views (GPUs, torch.compile) cast inside the reduction, with no full-size copy of ``x`` in ``dtype``.
    The eager contiguous CPU paths cast ``x`` whole first: mixed-dtype row sums measured slower there (bf16
    resnet18). A channels_last map is summed by strided adds over its (N, H, W, C) view, whose rows are runs of
    whole pixels, widening as the first rows are added (faster than a float32 copy and avg_pool2d there).
    """
    dtype = dtype or x.dtype
    if _plain_views(x):
        return _padded_blocks(x, bh, bw).sum((3, 5), dtype=dtype)
    if is_channels_last(x):  # the rows' sums widen to dtype as they go: no full-size copy of x
        return _strided_sums(_strided_sums(x.permute(0, 2, 3, 1), 1, bh, dtype), 2, bw).permute(0, 3, 1, 2)
    x = x.to(dtype)
    n, c, height, width = x.shape
    hb, wb = math.ceil(height / bh), math.ceil(width / bw)
    partial = height % bh or width % bw
    if not x.is_contiguous() or (partial and hb * wb <= _SMALL_GRID):  # where avg_pool2d is the fastest
        return F.avg_pool2d(x, (bh, bw), (bh, bw), ceil_mode=True, divisor_override=1)
    if height % bh == 0 and wb == 1:  # each block is a run of bh * width elements: one matrix-vector product
        ones = _indicator(bh * width, bh * width, x.device, dtype)  # (length, 1), all ones
        with _no_autocast(x.device):  # sum in dtype, not in autocast's bfloat16
            return (x.view(n * c * hb, bh * width) @ ones).view(n, c, hb, wb)
    return _strided_sums(_strided_sums(x, 2, bh), 3, bw)  # each block's column sums, then their sums


def _strided_sums(x: torch.Tensor, dim: int, step: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sums of every ``step`` consecutive entries of ``x`` along ``dim`` (the last group may be shorter), in
    ``dtype`` (default: that of ``x``): offset k of every group added in turn, in strided adds, which the CPU runs
    several times faster than a reduction or a matrix product over a short axis. An Inf stays in its own group."""
    def offset(k: int) -> torch.Tensor:
        return x[(slice(None),) * dim + (slice(k, None, step),)]

    if dtype not in (None, x.dtype):  # offset 0 widened, then the others added to it in the wider type
        total, start = offset(0).to(dtype, memory_format=torch.contiguous_format, copy=True), 1
    elif step == 1:
        return x
    elif offset(1).shape[dim] == offset(0).shape[dim]:
        total, start = offset(0) + offset(1), 2
    else:
        total, start = offset(0).clone(memory_format=torch.contiguous_format), 1
    for k in range(start, step):
        piece = offset(k)  # a partial last group lacks the higher offsets
        total.narrow(dim, 0, piece.shape[dim]).add_(piece)
    return total


class _BlockSum(torch.autograd.Function):
    """``_sum_blocks`` with a backward that expands the gradient (fast on CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
        ctx.geometry = (bh, bw, *x.shape[-2:])
        return _sum_blocks(x, bh, bw)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _expand(grad, *ctx.geometry), None, None


def _block_sums(x: torch.Tensor, block: tuple[int, int], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sum of every block of ``x`` (N, C, H, W) -> (N, C, Hb, Wb) in ``dtype`` (default: that of ``x``),
    differentiable; each from its own block."""
    if block == (1, 1):
        return x.to(dtype or x.dtype)
    if x.requires_grad and not _plain_views(x):  # else autograd of the view's sum is as good
        return _BlockSum.apply(x.to(dtype or x.dtype), *block)
    return _sum_blocks(x, *block, dtype)


def _block_max(x: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Block max of ``x`` (N, C, H, W) -> (N, C, Hb, Wb); NaN propagates within its block only."""
    if block == (1, 1):
        return x
    if block == tuple(x.shape[-2:]):
        return x.amax((-2, -1), keepdim=True)
    return F.max_pool2d(x, block, block, ceil_mode=True)


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half types (no overflow or underflow of block sums), else the dtype of ``x``."""
    return torch.promote_types(x.dtype, torch.float32)


def block_scores(
    x: torch.Tensor, block_size: BlockSize, score: str = "mean", nonnegative: bool = False,
    sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score of every block of ``x`` (N, C, H, W): mean |x|, max |x| or RMS, shape ``(N, C, Hb, Wb)``.

    ``nonnegative=True`` promises ``x >= 0`` (ReLU outputs) and skips the ``abs``. Half types are summed
    in float32; a block's score reads that block only, so a NaN or Inf leaves the other scores alone. ``sums``:
    the map's ``block_magnitude_sums``, where the caller has them already, for the mean score (the others take
    their own).
    """
    height, width = x.shape[-2:]
    block = block_shape(block_size, height, width)
    if score == "max":
        return _block_max(x if nonnegative else x.abs(), block)
    wide = accumulation_dtype(x)
    if score == "rms":
        values = x.to(wide)
        sums = _block_sums(values * values, block, wide)
    elif sums is None:
        sums = _block_sums(x if nonnegative else x.abs(), block, wide)
    means = sums / block_element_counts(block, height, width, x.device, wide)
    return (means.sqrt() if score == "rms" else means).to(x.dtype)


def _above(values: torch.Tensor, limit: float | torch.Tensor) -> torch.Tensor:
    """True where ``values > limit``, and where a value is NaN or +Inf (even against an infinite limit)."""
    finite_limit = torch.as_tensor(limit, dtype=values.dtype).clamp(max=torch.finfo(values.dtype).max)
    return values.le(finite_limit).logical_not_()


def block_mask(scores: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The dynamic mask: True where a block is kept (``score > threshold``, or a NaN or Inf score)."""
    return _above(scores, threshold)


def block_magnitude_sums(x: torch.Tensor, block_size: BlockSize, nonnegative: bool = False) -> torch.Tensor:
    """Sum of |x| over every block of ``x`` (N, C, H, W), detached, in at least float32, shape ``(N, C, Hb, Wb)``:
    what ``block_keep`` compares for the mean score, and all the l1 penalty of a non-negative map needs."""
    x = x.detach()
    block = block_shape(block_size, *x.shape[-2:])
    return _block_sums(x if nonnegative else x.abs(), block, accumulation_dtype(x))  # see _sum_blocks


def block_keep(
    x: torch.Tensor, block_size: BlockSize, score: str, threshold: float | torch.Tensor, nonnegative: bool = False,
    sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """The dynamic mask of ``x`` (N, C, H, W) by ``score``: True where a block's score is above ``threshold``.

    Like ``block_mask(block_scores(...))``, but a mean or RMS is compared as a sum (sum |x| > threshold *
    count), in at least float32, so no score underflows to 0: threshold 0 keeps exactly the blocks that
    hold a non-zero value, subnormals included. A block with a NaN or Inf is kept. ``sums``: the map's
    ``block_magnitude_sums`` where the caller has them already (they are not taken again).
    """
    x = x.detach()
    height, width = x.shape[-2:]
    block = block_shape(block_size, height, width)
    wide = accumulation_dtype(x)
    if score == "max":
        return _above(_block_max(x if nonnegative else x.abs(), block).to(wide), threshold)
    counts = block_element_counts(block, height, width, x.device, wide)
    if sums is None:
        sums = block_magnitude_sums(x, block_size, nonnegative)
    keep = _above(sums, threshold * counts)
    if score == "rms":  # RMS >= mean |x|, so the sum of |x| stays a valid test where x*x underflows to 0
        values = x.to(wide)  # x * x is |x| * |x|, bit for bit
        keep = keep | _above(_block_sums(values * values, block), threshold * abs(threshold) * counts)
    return keep


def _block_rows(values: torch.Tensor, bw: int, width: int) -> torch.Tensor:
    """(N, C, Hb, Wb) -> (N, C, Hb, 1, W): each block's value repeated along its columns."""
    n, c, hb, wb = values.shape
    rows = values.reshape(n * c * hb, wb) @ _indicator(width, bw, values.device, values.dtype).t()
    return rows.view(n, c, hb, 1, width)


def _mask_rows(x: torch.Tensor, rows: torch.Tensor, bh: int, out: torch.Tensor) -> torch.Tensor:
    """``out`` = ``x`` (N, C, H, W, contiguous) times ``rows`` (N, C, Hb, W), each row of ``rows`` repeated over
    the ``bh`` rows of its block row; one multiply per row offset, as a broadcast over ``bh`` runs several times
    slower on the CPU (short inner loops)."""
    n, c, height, width = x.shape
    source, target = x.view(n, c, height // bh, bh, width), out.view(n, c, height // bh, bh, width)
    for k in range(bh):
        torch.mul(source[:, :, :, k], rows, out=target[:, :, :, k])
    return out


class _RowMask(torch.autograd.Function):
    """``_mask_rows`` into a new map, differentiable: the gradient is masked the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor, bh: int) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.bh = bh
        return _mask_rows(x, rows, bh, torch.empty_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        return _RowMask.apply(grad.contiguous(), rows, ctx.bh), None, None


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


def is_channels_last(x: torch.Tensor) -> bool:
    """True when ``x`` (N, C, H, W) is laid out as N, H, W, C (and not also plainly contiguous, as when C is 1)."""
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def apply_block_mask(x: torch.Tensor, mask: torch.Tensor, block_size: BlockSize, inplace: bool = False) -> torch.Tensor:
    """Zero the blocks of ``x`` where ``mask`` is False; kept blocks pass unchanged (bit for bit).

    A dropped block is multiplied by 0, so it must be finite (``block_keep`` never drops a NaN or Inf);
    a zero keeps its sign. ``inplace=True`` overwrites ``x`` (only where autograd does not need it).
    The per-block mask is broadcast (over the map, over block rows, or over the blocks of a view in the
    layout of ``x``, channels_last included, which the output keeps), so no full-size mask is made where
    the blocks tile the map; except on the eager CPU path, where a contiguous map of at most 16 blocks, and a
    map with partial border blocks, and a channels_last map, are multiplied by the mask expanded in full in the
    layout of ``x`` (faster there).
    """
    n, c, height, width = x.shape
    bh, bw = block_shape(block_size, height, width)
    hb, wb = mask.shape[-2:]
    keep = mask.to(x.dtype)
    compiling = torch.compiler.is_compiling()  # no 6-D product: inductor would write it contiguous, then copy it
    if hb * wb == 1:
        full = keep
    elif height % bh == 0 and width % bw == 0 and is_channels_last(x) and not _plain_views(x):
        # eager CPU: the mask expanded in the layout of x, then one flat multiply (twice as fast as the broadcast)
        full = F.interpolate(keep.contiguous(memory_format=torch.channels_last), scale_factor=(bh, bw),
                             mode="nearest-exact")
    elif height % bh == 0 and width % bw == 0 and not compiling and _plain_views(x):
        blocks = x.unflatten(3, (wb, bw)).unflatten(2, (hb, bh))  # (N, C, Hb, bh, Wb, bw), a view in any layout
        per_block = keep[:, :, :, None, :, None]
        if inplace:
            blocks.mul_(per_block)
            return x
        return (blocks * per_block).flatten(4).flatten(2, 3)  # the product keeps the layout of x: still a view
    elif _plain_views(x):  # a broadcast the compiler folds into a 4-D multiply, written in the layout it chose for x
        full = keep[:, :, :, None, :, None].expand(n, c, hb, bh, wb, bw).reshape(n, c, hb * bh, wb * bw)
        full = full[:, :, :height, :width]
    elif hb * wb > _SMALL_GRID and height % bh == 0 and x.is_contiguous():
        rows = _block_rows(keep, bw, width)[:, :, :, 0]
        return _mask_rows(x, rows, bh, x) if inplace else _RowMask.apply(x, rows, bh)
    else:
        full = _expand(keep, bh, bw, height, width)
    return x.mul_(full) if inplace else x * full


def block_nonzero_counts(x: torch.Tensor, block_size: BlockSize) -> torch.Tensor:
    """Non-zero elements of every block of ``x`` (N, C, H, W), shape ``(N, C, Hb, Wb)``, int64.

    An integer reduction of the 0/1 map over the block view on GPUs and under torch.compile (one byte per
    element read); on the CPU float sums of 0/1 by the eager paths above, which are faster there and exact.
    """
    block = block_shape(block_size, *x.shape[-2:])
    nonzero = x.detach() != 0
    if _plain_views(x):
        return _padded_blocks(nonzero, *block).sum((3, 5), dtype=torch.int64)
    return _block_sums(nonzero.to(torch.float32), block).to(torch.int64)


def nonzero_blocks(x: torch.Tensor, block_size: BlockSize) -> torch.Tensor:
    """True for every block of ``x`` that holds at least one non-zero element, shape ``(N, C, Hb, Wb)``."""
    return block_nonzero_counts(x, block_size) > 0
