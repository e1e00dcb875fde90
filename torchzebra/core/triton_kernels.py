"""Triton kernels of the fused masked activation (see ``fused.py``, which launches them); imported on first use,
so that ``TRITON_INTERPRET=1`` set before then runs them on the CPU."""

import triton
import triton.language as tl


@triton.jit
def tile_indices(C, H, W, bh: tl.constexpr, bw: tl.constexpr, HBN, WBN,
                 CT: tl.constexpr, BH: tl.constexpr, WB: tl.constexpr, BW: tl.constexpr):
    """The image (int64, so that offsets past 2**31 elements stay right); channel, row and column of every tile
    element (CT, BH, WB, BW) and which lie in the map; the offset, validity and element count of every block
    (CT, WB) of this program's block row in the (N, C, Hb, Wb) block tensors."""
    n = (tl.program_id(0) // HBN).to(tl.int64)
    i = tl.program_id(0) % HBN
    c = tl.program_id(1) * CT + tl.arange(0, CT)
    r = tl.arange(0, BH)
    j = tl.arange(0, WB)
    k = tl.arange(0, BW)
    h = i * bh + r
    w = j[:, None] * bw + k[None, :]  # (WB, BW)
    inside = ((c < C)[:, None, None, None] & ((r < bh) & (h < H))[None, :, None, None]
              & ((k[None, :] < bw) & (w < W))[None, None, :, :])
    block_ok = (c < C)[:, None] & (j < WBN)[None, :]
    block_offset = n * C * HBN * WBN + (c[:, None] * HBN + i) * WBN + j[None, :]
    # elements per block, 1 past the map
    count = tl.maximum(tl.minimum(bh, H - i * bh) * tl.minimum(bw, W - j * bw), 1).to(tl.float32)[None, :]
    return n, c[:, None, None, None], h[None, :, None, None], w[None, None, :, :], inside, block_ok, block_offset, count


@triton.jit
def signed_zero(x):
    """``x * 0`` for finite ``x`` (a dropped block holds no NaN or Inf): a zero with the sign of x, as PyTorch's
    multiply by 0 gives, taken from the sign bit so that it holds in the interpreter's emulated bfloat16 too."""
    if x.dtype.primitive_bitwidth == 16:  # a compile-time branch: one return after it (Triton compiles every return)
        sign = x.to(tl.int16, bitcast=True) & -32768
    else:
        sign = x.to(tl.int32, bitcast=True) & -2147483648
    return sign.to(x.dtype, bitcast=True)


@triton.jit
def forward_kernel(x_ptr, out_ptr, threshold_ptr, keep_ptr, moment_ptr, nonzero_ptr,
                   C, H, W, bh: tl.constexpr, bw: tl.constexpr, HBN, WBN, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                   CT: tl.constexpr, BH: tl.constexpr, WB: tl.constexpr, BW: tl.constexpr,
                   SCORE: tl.constexpr, NONNEGATIVE: tl.constexpr, MOMENT: tl.constexpr, COUNT: tl.constexpr):
    n, c, h, w, inside, block_ok, block_offset, count = tile_indices(C, H, W, bh, bw, HBN, WBN, CT, BH, WB, BW)
    x = tl.load(x_ptr + n * sxn + c * sxc + h * sxh + w * sxw, mask=inside, other=0.0)
    wide = x.to(tl.float32)
    magnitude = wide if NONNEGATIVE else tl.abs(wide)
    threshold = tl.load(threshold_ptr).to(tl.float32)
    # kept: not (value <= limit), as block_keep tests it, so a NaN value or a NaN threshold keeps the block; the
    # limit is clipped to the largest float, so a +Inf value is kept even against an infinite threshold
    largest = 3.4028234663852886e38
    if SCORE == 1:
        score = tl.max(tl.max(tl.where(inside, magnitude, -float("inf")), axis=3), axis=1)  # padding: never the max
        has_nan = tl.max(tl.max((wide != wide).to(tl.int32), axis=3), axis=1) > 0
        keep = ~(score <= tl.minimum(threshold, largest, propagate_nan=tl.PropagateNan.ALL)) | has_nan
    else:  # sums against threshold x count, as block_keep compares them
        total = tl.sum(tl.sum(magnitude, axis=3), axis=1)
        keep = ~(total <= tl.minimum(threshold * count, largest, propagate_nan=tl.PropagateNan.ALL))
        if SCORE == 2:
            squares = tl.sum(tl.sum(magnitude * magnitude, axis=3), axis=1)
            square_limit = tl.minimum(threshold * tl.abs(threshold) * count, largest, propagate_nan=tl.PropagateNan.ALL)
            keep = keep | ~(squares <= square_limit)
    out = tl.where(keep[:, None, :, None], x, signed_zero(x))
    tl.store(out_ptr + n * son + c * soc + h * soh + w * sow, out, mask=inside)
    tl.store(keep_ptr + block_offset, keep.to(tl.int8), mask=block_ok)
    if MOMENT != 0:
        part = magnitude if MOMENT == 1 else wide * wide
        tl.store(moment_ptr + block_offset, tl.sum(tl.sum(part, axis=3), axis=1) / count, mask=block_ok)
    if COUNT:
        nonzero = tl.sum(tl.sum(((out != 0) & inside).to(tl.int32), axis=3), axis=1)
        tl.store(nonzero_ptr + block_offset, nonzero, mask=block_ok)


@triton.jit
def backward_kernel(grad_ptr, x_ptr, keep_ptr, moment_grad_ptr, out_ptr,
                    C, H, W, bh: tl.constexpr, bw: tl.constexpr, HBN, WBN, sgn, sgc, sgh, sgw, sxn, sxc, sxh, sxw,
                    son, soc, soh, sow,
                    CT: tl.constexpr, BH: tl.constexpr, WB: tl.constexpr, BW: tl.constexpr, MOMENT: tl.constexpr,
                    NONNEGATIVE: tl.constexpr):
    n, c, h, w, inside, block_ok, block_offset, count = tile_indices(C, H, W, bh, bw, HBN, WBN, CT, BH, WB, BW)
    grad = tl.load(grad_ptr + n * sgn + c * sgc + h * sgh + w * sgw, mask=inside, other=0.0)
    keep = tl.load(keep_ptr + block_offset, mask=block_ok, other=0) != 0
    result = tl.where(keep[:, None, :, None], grad, grad * 0.0)  # as autograd multiplies by the 0/1 mask
    if MOMENT != 0:
        per_element = tl.load(moment_grad_ptr + block_offset, mask=block_ok, other=0.0) / count
        if MOMENT == 1 and NONNEGATIVE:  # the block mean of x >= 0: a slope of 1, and x is not read
            slope = tl.full((CT, BH, WB, BW), 1.0, tl.float32)
        else:
            x = tl.load(x_ptr + n * sxn + c * sxc + h * sxh + w * sxw, mask=inside, other=0.0).to(tl.float32)
            slope = 2.0 * x if MOMENT == 2 else (x > 0).to(tl.float32) - (x < 0).to(tl.float32)
        result = (result.to(tl.float32) + slope * per_element[:, None, :, None]).to(grad.dtype)
    tl.store(out_ptr + n * son + c * soc + h * soh + w * sow, result, mask=inside)
