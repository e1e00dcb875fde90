"""The masked activation in one pass over the map: Triton kernels for the eager GPU path, forward and backward.

``masked_activation`` computes what ``block_keep`` and ``apply_block_mask`` compute, and on request the
per-block moment of the zero-block penalty and the non-zero count of every masked block (for counting),
reading each element of the map once and writing it once. Its backward is one more pass: the gradient times
the kept-block mask, plus the penalty's gradient. The PyTorch functions in ``blocks.py`` and ``penalty.py``
stay the reference the tests compare this with (on the CPU through Triton's interpreter, ``TRITON_INTERPRET=1``).
A program holds a tile of (channels, one block row, the map's width), so a channel's blocks never straddle two.

The kernels are opt-in until their tests have passed on a GPU: ``TORCHZEBRA_FUSED_KERNELS=1`` or
``set_fused_kernels(True)`` turns them on; without either, every map takes the PyTorch path.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
from types import ModuleType
from typing import Iterator, NamedTuple

import torch

from .._checks import environment_switch
from ..errors import ZebraError
from .blocks import BlockSize, block_grid, block_shape, recorded_or_transformed

SCORE_CODES = {"mean": 0, "max": 1, "rms": 2}
MOMENT_CODES = {None: 0, "l1": 1, "l2": 2, "group_lasso": 2}  # the penalty's block mean of |x| (1) or of x*x (2)
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_TILE = 4096  # elements of one program's tile, at most (more channels per program when a block row is small)
_MAX_ROW_TILE = 16384  # the largest block row (padded to powers of two) one program takes; larger maps go the plain way
ENVIRONMENT_VARIABLE = "TORCHZEBRA_FUSED_KERNELS"
_setting: bool | None = None  # set_fused_kernels / fused_kernels; None: the environment variable decides


@functools.cache
def _kernels() -> ModuleType | None:
    """The Triton kernels, imported on first use; None without Triton (torch's CUDA builds bring it)."""
    if importlib.util.find_spec("triton") is None:
        return None
    return importlib.import_module(".triton_kernels", __package__)


def _power_of_two(value: int) -> int:
    """The smallest power of two >= ``value``."""
    return 1 << (value - 1).bit_length()


def fused_kernels_enabled() -> bool:
    """Whether CUDA maps may take the fused kernels: as ``set_fused_kernels`` (or ``fused_kernels``) says, else
    as ``TORCHZEBRA_FUSED_KERNELS`` says (1/true/on or 0/false/off); off by default (not yet run on a GPU)."""
    if _setting is not None:
        return _setting
    return bool(environment_switch(ENVIRONMENT_VARIABLE, "set it to 1 (fused kernels on) or 0 (off)"))


def set_fused_kernels(enabled: bool | None) -> None:
    """Turn the fused kernels on or off for the whole process; None hands the choice back to the environment."""
    global _setting
    _setting = enabled


@contextlib.contextmanager
def fused_kernels(enabled: bool) -> Iterator[None]:
    """Turn the fused kernels on or off within the block only, e.g. to time or check either path."""
    previous = _setting
    set_fused_kernels(enabled)
    try:
        yield
    finally:
        set_fused_kernels(previous)


class _Tiling(NamedTuple):
    bh: int
    bw: int
    hb: int
    wb: int
    channels: int  # CT: channels per program
    rows: int  # BH: block rows, padded
    blocks: int  # WB: blocks along the width, padded
    cols: int  # BW: block columns, padded


def _tiling(x: torch.Tensor, block_size: BlockSize) -> _Tiling | None:
    """How programs tile ``x`` (N, C, H, W) with powers of two; None when one block row is too large for a program."""
    channels, height, width = x.shape[1:]
    bh, bw = block_shape(block_size, height, width)
    hb, wb = block_grid(block_size, height, width)
    rows, blocks, cols = (_power_of_two(v) for v in (bh, wb, bw))
    row_tile = rows * blocks * cols
    if row_tile > _MAX_ROW_TILE:
        return None
    per_program = min(max(1, _TILE // row_tile), _power_of_two(channels))
    return _Tiling(bh, bw, hb, wb, per_program, rows, blocks, cols)


def usable(x: torch.Tensor, block_size: BlockSize) -> bool:
    """Whether the layer takes the fused path for ``x``: an eager 4-D CUDA map of a half or single type whose
    block row fits one program, with Triton installed and the kernels turned on (``fused_kernels_enabled``);
    never while tracing, exporting or under torch.func transforms and forward-mode AD (they record or
    differentiate PyTorch ops)."""
    return (type(x) is torch.Tensor and _kernel_device(x) and fused_kernels_enabled() and not recorded_or_transformed()
            and x.dim() == 4 and x.dtype in _DTYPES and x.numel() > 0
            and _tiling(x, block_size) is not None and _kernels() is not None)


def _kernel_device(x: torch.Tensor) -> bool:
    """Whether ``x`` is on a device the kernels launch on (CUDA; tests widen it to the CPU's interpreter)."""
    return x.is_cuda


def _may_overlap(x: torch.Tensor) -> bool:
    """Whether two elements of ``x`` may share memory: each stride, smallest first, must step past the span of
    the smaller ones (true of every dense layout and of sliced views; an expanded view fails it)."""
    span = 0
    for stride, size in sorted((stride, size) for size, stride in zip(x.shape, x.stride()) if size > 1):
        if stride <= span:
            return True
        span += stride * (size - 1)
    return False


def _on_device(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the one ``x`` is on."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _geometry(tiling: _Tiling) -> tuple[int, int, int, int]:
    """The block grid and block shape arguments every kernel takes after (C, H, W): bh, bw, Hb, Wb."""
    return tiling.bh, tiling.bw, tiling.hb, tiling.wb


def _launch_grid(x: torch.Tensor, tiling: _Tiling) -> tuple[int, int]:
    """Programs: one per (image, block row) along the first axis, per group of channels along the second."""
    return x.shape[0] * tiling.hb, -(-x.shape[1] // tiling.channels)


def _meta(tiling: _Tiling) -> dict[str, int]:
    """The tile's constexpr sizes, and warps by tile size: 16 elements per thread, up to 16 warps (32 for the
    largest tiles)."""
    elements = tiling.channels * tiling.rows * tiling.blocks * tiling.cols
    return {"CT": tiling.channels, "BH": tiling.rows, "WB": tiling.blocks, "BW": tiling.cols,
            "num_warps": min(16, max(4, elements // 512))}


class _Options(NamedTuple):
    """What one fused call computes, besides the masked map."""

    tiling: _Tiling
    score: str
    nonnegative: bool
    moment: int  # MOMENT_CODES: 0 none, 1 block mean |x|, 2 block mean x*x
    count: bool


def forward_launch(x: torch.Tensor, out: torch.Tensor, threshold: torch.Tensor, options: _Options):
    """The forward kernel's grid, arguments and compile-time options for ``x`` written to ``out``, with the
    keep, moment and count buffers they fill (also what ``tests/compile_kernels.py`` compiles)."""
    tiling = options.tiling
    n, channels, height, width = x.shape
    blocks = (n, channels, tiling.hb, tiling.wb)
    keep = torch.empty(blocks, dtype=torch.int8, device=x.device)
    moments = torch.empty(blocks if options.moment else (0,), dtype=torch.float32, device=x.device)
    nonzero = torch.empty(blocks if options.count else (0,), dtype=torch.int32, device=x.device)
    args = (x, out, threshold, keep, moments, nonzero, channels, height, width, *_geometry(tiling), *x.stride(),
            *out.stride())
    constants = {**_meta(tiling), "SCORE": SCORE_CODES[options.score], "NONNEGATIVE": options.nonnegative,
                 "MOMENT": options.moment, "COUNT": options.count}
    return _launch_grid(x, tiling), args, constants, (keep, moments, nonzero)


def _reads_map(options: _Options) -> bool:
    """Whether the backward reads the map: for the moments' gradient, except the block mean of a map >= 0 (slope 1)."""
    return options.moment == 2 or (options.moment == 1 and not options.nonnegative)


def backward_launch(grad: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, moment_grad: torch.Tensor,
                    out: torch.Tensor, options: _Options):
    """The backward kernel's grid, arguments and compile-time options."""
    args = (grad, x, keep, moment_grad, out, *grad.shape[1:], *_geometry(options.tiling), *grad.stride(),
            *x.stride(), *out.stride())
    constants = {**_meta(options.tiling), "MOMENT": options.moment, "NONNEGATIVE": options.nonnegative}
    return _launch_grid(grad, options.tiling), args, constants


def _forward(x: torch.Tensor, out: torch.Tensor, threshold: torch.Tensor, options: _Options):
    """Run the forward kernel; the keep, moment and count buffers it filled."""
    grid, args, constants, buffers = forward_launch(x, out, threshold.detach().to(x.device, torch.float32), options)
    with _on_device(x):
        _kernels().forward_kernel[grid](*args, **constants)
    return buffers


class _MaskedActivation(torch.autograd.Function):
    """Forward: the masked map, the penalty's block moments and the masked blocks' non-zero counts; backward:
    gradient x kept-block mask + the moments' gradient (the mask itself has none, as in ``block_keep``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: torch.Tensor, options: _Options):
        out = torch.empty_like(x)
        keep, moments, nonzero = _forward(x, out, threshold, options)
        ctx.options = options
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        ctx.layout = torch.channels_last if channels_last else torch.contiguous_format
        ctx.save_for_backward(keep, x if _reads_map(options) else None)
        ctx.mark_non_differentiable(*([nonzero] if options.moment else [moments, nonzero]))
        return out, moments, nonzero

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernel's gradient has no graph: refuse double backward
    def backward(ctx, grad, moment_grad, _nonzero_grad):
        keep, x = ctx.saved_tensors
        out = torch.empty_like(grad, memory_format=ctx.layout)  # an expanded gradient gets the map's layout
        # a mean's gradient arrives expanded (stride 0); keep and grad stand in for what the kernel does not read
        moment_grad = moment_grad.contiguous() if ctx.options.moment else keep
        grid, args, constants = backward_launch(grad, grad if x is None else x, keep, moment_grad, out, ctx.options)
        with _on_device(grad):
            _kernels().backward_kernel[grid](*args, **constants)
        return out, None, None


class FusedResult(NamedTuple):
    """What ``masked_activation`` returns; the optional parts are None where they were not asked for."""

    output: torch.Tensor  # the masked map
    moments: torch.Tensor | None  # the penalty's block moments (N, C, Hb, Wb), float32, differentiable
    nonzero: torch.Tensor | None  # non-zero elements of every masked block (N, C, Hb, Wb), int32


def masked_activation(
    x: torch.Tensor,
    block_size: BlockSize,
    score: str,
    threshold: torch.Tensor,
    nonnegative: bool = False,
    penalty: str | None = None,
    count: bool = False,
    inplace: bool = False,
) -> FusedResult:
    """``apply_block_mask(x, block_keep(x, ...))`` in one pass; with ``penalty`` also the block moments that
    ``penalty_from_moments`` turns into the zero-block penalty, with ``count`` the masked blocks' non-zeros.
    ``x`` must be a map ``usable`` accepts (or any map under ``TRITON_INTERPRET=1``)."""
    tiling = _tiling(x, block_size) if x.dim() == 4 and x.numel() > 0 and _kernels() is not None else None
    if tiling is None:
        raise ZebraError(f"the fused kernels cannot take this map ({tuple(x.shape)}, block {block_size!r}): "
                         "check usable(x, block_size) first")
    options = _Options(tiling, score, nonnegative, MOMENT_CODES[penalty], count)
    threshold = torch.as_tensor(threshold)
    if inplace:  # no autograd: the kernel writes over x (each program reads its strip before writing it)
        if torch.is_grad_enabled() and x.requires_grad:
            raise ZebraError("inplace=True overwrites the map autograd needs: use it under torch.no_grad() only")
        if _may_overlap(x):
            raise ZebraError(f"inplace=True cannot write a map whose elements share memory (strides {x.stride()}, "
                             "an expanded view): clone() it first, as PyTorch's in-place ops require")
        _, moments, nonzero = _forward(x, x, threshold, options)
        out = x
    else:
        out, moments, nonzero = _MaskedActivation.apply(x, threshold, options)
    return FusedResult(out, moments if penalty else None, nonzero if count else None)
