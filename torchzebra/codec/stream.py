"""encode / decode / inspect: one activation map (or a batch) as a self-describing byte stream whose
payload is exactly the bytes the traffic model counts (docs/FORMAT.md)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..core import BlockSize, validate_block_size, validate_format
from ..errors import ZebraError
from . import bitstream
from .layout import (
    BATCHED,
    FORMAT_CODES,
    HEADER,
    MAGIC,
    PER_CHANNEL,
    SIGNED,
    VERSION,
    Header,
    block_sizes,
    from_block_major,
    occupied_blocks,
    to_block_major,
)
from .quant import dequantize, level_dtype, level_range, quantize, scale_is_valid
from .widths import WIDTHS

MAX_ELEMENTS = 1 << 31  # decode refuses to allocate more unless asked (a zero map needs very few bytes)
_FORMATS = {code: name for name, code in FORMAT_CODES.items()}


class StreamError(ZebraError):
    """A byte stream is not a valid torchzebra codec stream; the message says what is wrong."""


@dataclass(frozen=True)
class StreamInfo:
    """What ``inspect`` reads from a stream without decoding it."""

    format: str
    version: int
    shape: tuple[int, ...]  # as encoded: (C, H, W) or (N, C, H, W)
    block_size: BlockSize
    bits: int
    signed: bool
    per_channel: bool
    scale: tuple[float, ...]
    header_bytes: int  # fixed header + scale and map-length tables
    payload_bytes: int  # the traffic model's bytes
    map_bytes: tuple[int, ...]


def encode(x: torch.Tensor, fmt: str = "zebra", block_size: BlockSize = 4, bits: int = 8, *,
           per_channel: bool = False, scale: float | torch.Tensor | None = None) -> bytes:
    """Encode ``x`` ((C,H,W) or (N,C,H,W)) in format ``fmt`` at ``bits`` (8/16: integers with a scale, 32:
    float32). The payload of each map is exactly the traffic model's bytes for the quantised map."""
    fmt = validate_format(fmt)
    block_size = validate_block_size(block_size)
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or x.numel() == 0:
        raise ZebraError(f"encode() takes a non-empty (C, H, W) or (N, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    batched = x.dim() == 4
    x4 = x if batched else x.unsqueeze(0)
    n, c, h, w = x4.shape
    q = quantize(x4, bits, per_channel, scale)
    meta, meta_bits, values, counts = _split(q.levels, fmt, (n, c, h, w), block_size)
    step = q.levels.dtype.itemsize
    value_bytes = counts * step
    payload = bitstream.pack(meta, meta_bits, values.view(np.uint8).ravel(), value_bytes)
    lengths = bitstream.map_lengths(meta_bits, value_bytes)
    header = Header(fmt, q.bits, q.signed, per_channel and q.bits != 32, batched, (n, c, h, w), block_size,
                    q.scale.size, payload.size, zlib.crc32(payload))
    tables = q.scale.tobytes() + lengths.astype("<u8").tobytes()
    return header.pack(tables) + tables + payload.tobytes()


def _split(levels: np.ndarray, fmt: str, shape: tuple[int, int, int, int], block_size: BlockSize):
    """(metadata bits, metadata bits per map, values, value count per map) of every map, in stream order."""
    n, elements = levels.shape
    if fmt == "dense":
        return np.zeros(0, bool), np.zeros(n, np.int64), levels.ravel(), np.full(n, elements, np.int64)
    if fmt == "zvc":
        nonzero = levels != 0
        return nonzero.ravel(), np.full(n, elements, np.int64), levels[nonzero], nonzero.sum(1)
    ordered = to_block_major(levels, shape, block_size)
    nonzero = ordered != 0
    sizes = block_sizes(shape, block_size)
    occupied = occupied_blocks(nonzero, sizes)  # (N, B) block bitmap
    kept = np.repeat(occupied, sizes, axis=1)  # (N, E): the element lies in a non-zero block
    in_blocks = kept.sum(1)
    if fmt == "zebra":
        return occupied.ravel(), np.full(n, sizes.size, np.int64), ordered[kept], in_blocks
    meta = np.concatenate((occupied, nonzero), axis=1)[np.concatenate((np.ones_like(occupied), kept), axis=1)]
    return meta, sizes.size + in_blocks, ordered[nonzero], nonzero.sum(1)


def _read_header(buf: bytes) -> tuple[Header, np.ndarray, np.ndarray, int]:
    """Parse and check everything but the payload: (header, scales, map lengths, payload offset)."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise StreamError(f"a codec stream is bytes, got {type(buf).__name__}")
    buf = bytes(buf)
    if len(buf) < HEADER.size:
        raise StreamError(f"stream truncated: {len(buf)} bytes, the header alone is {HEADER.size}")
    (magic, version, code, bits, flags, n, c, h, w, block, scales, payload_bytes, payload_crc,
     header_crc) = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise StreamError(f"not a torchzebra codec stream: it starts with {magic!r}, not {MAGIC!r}")
    if version != VERSION:
        raise StreamError(f"codec stream version {version} is not supported (this torchzebra reads version {VERSION})")
    table_end = HEADER.size + 4 * scales + 8 * n
    if len(buf) < table_end:
        raise StreamError(f"stream truncated: {len(buf)} bytes, its header and tables need {table_end}")
    if zlib.crc32(buf[HEADER.size:table_end], zlib.crc32(buf[:HEADER.size - 4])) != header_crc:
        raise StreamError("stream header corrupted: its CRC-32 does not match")
    if code not in _FORMATS or bits not in WIDTHS or flags & ~(SIGNED | PER_CHANNEL | BATCHED):
        raise StreamError(f"invalid header fields: format code {code}, bits {bits}, flags {flags:#x}")
    if min(n, c, h, w) < 1 or (not flags & BATCHED and n != 1):
        raise StreamError(f"invalid shape N={n} C={c} H={h} W={w} in the header")
    expected_scales = 0 if bits == 32 else (c if flags & PER_CHANNEL else 1)
    if scales != expected_scales:
        raise StreamError(f"header lists {scales} scales; {bits}-bit data with these flags needs {expected_scales}")
    if len(buf) != table_end + payload_bytes:
        raise StreamError(f"stream {'truncated' if len(buf) < table_end + payload_bytes else 'has trailing bytes'}: "
                          f"{len(buf)} bytes, the header describes {table_end + payload_bytes}")
    scale = np.frombuffer(buf, "<f4", scales, HEADER.size)
    if not np.all(scale_is_valid(scale, bits, bool(flags & SIGNED))):
        raise StreamError("invalid scale in the header: scales must be positive finite numbers, finite times the "
                          "largest level")
    lengths = np.frombuffer(buf, "<u8", n, HEADER.size + 4 * scales).astype(np.int64)
    if np.any(lengths < 0) or int(lengths.sum()) != payload_bytes:
        raise StreamError(f"the map lengths add up to {int(lengths.astype(np.uint64).sum())} bytes, "
                          f"the payload holds {payload_bytes}")
    header = Header(_FORMATS[code], bits, bool(flags & SIGNED), bool(flags & PER_CHANNEL), bool(flags & BATCHED),
                    (n, c, h, w), "map" if block == 0 else block, scales, payload_bytes, payload_crc)
    return header, scale, lengths, table_end


def inspect(buf: bytes) -> StreamInfo:
    """Header fields, scales and sizes of a stream, without decoding its payload."""
    header, scale, lengths, start = _read_header(buf)
    return StreamInfo(header.fmt, VERSION, header.shape if header.batched else header.shape[1:], header.block_size,
                      header.bits, header.signed, header.per_channel, tuple(float(s) for s in scale), start,
                      header.payload_bytes, tuple(int(v) for v in lengths))


def decode(buf: bytes, *, max_elements: int = MAX_ELEMENTS) -> torch.Tensor:
    """The dequantised float32 tensor of a stream (shape as encoded). Any inconsistency is a StreamError
    (a ValueError) saying what is wrong; a stream describing more than ``max_elements`` values is refused."""
    header, scale, lengths, start = _read_header(buf)
    n, c, h, w = header.shape
    elements = c * h * w
    if n * elements > max_elements:
        raise StreamError(f"the stream describes {n}x{c}x{h}x{w} = {n * elements:,} values, more than "
                          f"max_elements={max_elements:,}; pass a larger max_elements if you trust it")
    payload = np.frombuffer(bytes(buf), np.uint8, header.payload_bytes, start)
    if zlib.crc32(payload) != header.payload_crc:
        raise StreamError("stream payload corrupted: its CRC-32 does not match the header")
    levels = _levels(header, payload, lengths)
    low, top = level_range(header.bits, header.signed) if header.bits != 32 else (None, None)
    if header.bits == 32:
        if not np.all(np.isfinite(levels)):
            raise StreamError("malformed stream: non-finite float values")
    elif levels.size and (levels.min() < low or levels.max() > top):
        raise StreamError(f"malformed stream: levels outside [{low}, {top}]")
    out = dequantize(levels, scale, header.shape)
    return out if header.batched else out[0]


def _levels(header: Header, payload: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The ``(N, E)`` levels of every map, checking each map's bitmaps against its length."""
    n, c, h, w = header.shape
    elements = c * h * w
    dtype = level_dtype(header.bits, header.signed)
    step = dtype.itemsize
    bases = np.cumsum(lengths) - lengths
    zero = np.zeros(n, np.int64)
    out = np.zeros((n, elements), dtype)
    if header.fmt == "dense":
        _check_lengths(lengths, zero, np.full(n, elements * step, np.int64))
        out[:] = payload.view(dtype).reshape(n, elements)
        return out
    if header.fmt == "zvc":
        _check_room(lengths, np.full(n, elements, np.int64))
        present = bitstream.unpack_bits(payload, bases, zero, np.full(n, elements, np.int64)).reshape(n, elements)
        counts = present.sum(1)
        _check_lengths(lengths, np.full(n, elements, np.int64), counts * step)
        out[present] = _values(payload, bases, np.full(n, elements, np.int64), counts, dtype, marked=True)
        return out
    shape = header.shape
    sizes = block_sizes(shape, header.block_size)
    blocks = sizes.size
    _check_room(lengths, np.full(n, blocks, np.int64))
    occupied = bitstream.unpack_bits(payload, bases, zero, np.full(n, blocks, np.int64)).reshape(n, blocks)
    kept = np.repeat(occupied, sizes, axis=1)
    in_blocks = kept.sum(1)
    ordered = np.zeros((n, elements), dtype)
    if header.fmt == "zebra":
        _check_lengths(lengths, np.full(n, blocks, np.int64), in_blocks * step)
        ordered[kept] = _values(payload, bases, np.full(n, blocks, np.int64), in_blocks, dtype)
        present = ordered != 0
    else:
        meta_bits = blocks + in_blocks
        _check_room(lengths, meta_bits)
        present = np.zeros((n, elements), bool)
        present[kept] = bitstream.unpack_bits(payload, bases, np.full(n, blocks, np.int64), in_blocks)
        counts = present.sum(1)
        _check_lengths(lengths, meta_bits, counts * step)
        ordered[present] = _values(payload, bases, meta_bits, counts, dtype, marked=True)
    if np.any(occupied & ~occupied_blocks(present, sizes)):
        raise StreamError("malformed stream: a block marked non-zero in the block bitmap holds only zeros")
    return from_block_major(ordered, shape, header.block_size)


def _values(payload, bases, meta_bits, counts, dtype, marked: bool = False) -> np.ndarray:
    """The values after each map's metadata; ``marked``: each has a bitmap bit, so none may be zero."""
    values = bitstream.unpack_bytes(payload, bases, meta_bits, counts * dtype.itemsize).view(dtype)
    if marked and np.any(values == 0):
        raise StreamError("malformed stream: a value marked non-zero in the bitmap is zero")
    return values


def _check_room(lengths: np.ndarray, meta_bits: np.ndarray) -> None:
    short = np.nonzero(lengths * 8 < meta_bits)[0]
    if short.size:
        i = int(short[0])
        raise StreamError(f"map {i} is {int(lengths[i])} bytes, too short for its {int(meta_bits[i])}-bit bitmap")


def _check_lengths(lengths: np.ndarray, meta_bits: np.ndarray, value_bytes: np.ndarray) -> None:
    expected = bitstream.map_lengths(meta_bits, value_bytes)
    wrong = np.nonzero(expected != lengths)[0]
    if wrong.size:
        i = int(wrong[0])
        raise StreamError(f"map {i}: its bitmap describes {int(expected[i])} bytes, the length table says "
                          f"{int(lengths[i])}")


def fake_quantize(x: torch.Tensor, bits: int = 8, per_channel: bool = False,
                  scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """What ``decode(encode(x, ..., bits))`` returns: ``x`` quantised and dequantised the codec's way."""
    x4 = x if x.dim() == 4 else x.unsqueeze(0)
    q = quantize(x4, bits, per_channel, scale)
    out = dequantize(q.levels, q.scale, tuple(x4.shape))
    return out if x.dim() == 4 else out[0]


