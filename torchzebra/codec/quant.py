"""The quantisation the codec and the traffic model share: symmetric integers with a per-tensor or
per-channel scale (unsigned when the map has no negative value, as after a ReLU), or float32."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ZebraError
from .widths import validate_width

_TINY = float(torch.finfo(torch.float32).tiny)  # the smallest scale: level * scale never underflows to 0
_ROUNDER = 1.5 * 2**23  # v + R - R rounds a float32 |v| <= 2**22 to the nearest integer, ties to even


@dataclass(frozen=True)
class Quantized:
    """Integer levels (or float32 values at 32 bits) of an ``(N, C, H, W)`` map and how to read them back."""

    levels: np.ndarray  # (N, C*H*W), little-endian dtype of ``bits`` width
    scale: np.ndarray  # float32, shape (1,) per tensor, (C,) per channel, (0,) at 32 bits
    signed: bool
    bits: int


def level_dtype(bits: int, signed: bool) -> np.dtype:
    """The little-endian numpy dtype of one stored value."""
    levels = {(8, True): "<i1", (8, False): "<u1", (16, True): "<i2", (16, False): "<u2"}
    return np.dtype(levels.get((bits, signed), "<f4"))


def level_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest level the encoder writes (symmetric when signed: -128 is never used at 8 bits)."""
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return (-top if signed else 0), top


def scale_is_valid(scale: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Where a float32 ``scale`` of ``bits``-bit levels is positive and finite, and finite times the largest level
    (so every level decodes to a finite value)."""
    with np.errstate(over="ignore"):
        return np.isfinite(scale) & (scale > 0) & np.isfinite(np.float32(level_range(bits, signed)[1]) * scale)


def quantize(x: torch.Tensor, bits: int = 8, per_channel: bool = False,
             scale: float | torch.Tensor | None = None) -> Quantized:
    """Quantise an ``(N, C, H, W)`` float map: ``level = clamp(round(x / scale))``, ``scale = max|x| / top``
    (per tensor, or per channel over N, H, W), unless ``scale`` is given."""
    bits = validate_width(bits)
    x = x.detach().to("cpu", torch.float32)
    n, c = x.shape[:2]
    if per_channel:
        smallest, largest = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
    else:
        smallest, largest = (v.reshape(1) for v in torch.aminmax(x))  # one pass
    magnitude = torch.maximum(-smallest, largest)
    if not torch.isfinite(magnitude).all():  # the extremes are inf or NaN exactly when some value is
        raise ZebraError("cannot encode a map with NaN or infinite values")
    if bits == 32:
        return Quantized(x.reshape(n, -1).numpy().astype("<f4", copy=False), np.zeros(0, "<f4"), True, 32)
    signed = bool(smallest.min() < 0)
    low, top = level_range(bits, signed)
    if scale is None:
        scale = torch.clamp(magnitude / top, min=_TINY)
        # near the largest float, max|x| / top may round up so far that top * scale overflows: one step down
        valid = torch.from_numpy(scale_is_valid(scale.numpy(), bits, signed))
        scale = torch.where(valid, scale, torch.nextafter(scale, torch.zeros_like(scale)))
    else:
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        if (scale.numel() != (c if per_channel else 1) or not (scale >= _TINY).all()
                or not scale_is_valid(scale.numpy(), bits, signed).all()):
            raise ZebraError(f"scale must be {'C=' + str(c) if per_channel else 'one'} positive finite number(s), "
                             f"finite times the largest level ({top})")
    view = scale.reshape(1, -1, 1, 1) if per_channel else scale
    levels = torch.div(x, view).clamp_(low, top)
    levels.add_(_ROUNDER).sub_(_ROUNDER)  # round half to even, vectorised (torch.round is ~10x slower on CPU)
    levels = levels.to(_TORCH_LEVELS[bits, signed]).reshape(n, -1).numpy()
    return Quantized(levels.view(level_dtype(bits, signed)), scale.numpy().astype("<f4"), signed, bits)


_TORCH_LEVELS = {(8, True): torch.int8, (8, False): torch.uint8, (16, True): torch.int16, (16, False): torch.uint16}


def dequantize(levels: np.ndarray, scale: np.ndarray, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Float32 values of ``levels`` (``(N, C*H*W)``): ``level * scale`` (float32 at 32 bits: as stored)."""
    values = torch.from_numpy(np.ascontiguousarray(levels)).reshape(shape)
    if scale.size == 0:
        return values.to(torch.float32)
    factor = torch.from_numpy(scale.astype(np.float32))
    return values.to(torch.float32) * (factor.reshape(1, -1, 1, 1) if scale.size > 1 else factor)
