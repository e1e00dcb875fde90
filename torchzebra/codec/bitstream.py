"""Vectorised bit packing of many maps at once: each map is its metadata bits, then its value bytes
from the next bit on, then zero bits up to a byte boundary (bits are filled LSB first)."""

from __future__ import annotations

import numpy as np


def _spread(lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Flat positions ``starts[i] + 0 .. lengths[i]-1`` for every i, concatenated."""
    total = int(lengths.sum())
    begins = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - begins, lengths)


def map_lengths(meta_bits: np.ndarray, value_bytes: np.ndarray) -> np.ndarray:
    """Bytes of each map: ``ceil(meta_bits / 8) + value_bytes`` (values are whole bytes)."""
    return (meta_bits + 7) // 8 + value_bytes


def pack(meta: np.ndarray, meta_bits: np.ndarray, values: np.ndarray, value_bytes: np.ndarray) -> np.ndarray:
    """Pack every map: ``meta`` holds all maps' metadata bits (bool, concatenated; ``meta_bits[i]`` each),
    ``values`` all maps' value bytes (uint8, concatenated; ``value_bytes[i]`` each). Returns the payload."""
    if not np.any(meta_bits % 8):  # every map's metadata is whole bytes: the values are byte-aligned
        metas = np.split(np.packbits(meta, bitorder="little"), np.cumsum(meta_bits // 8)[:-1])
        pieces = np.split(values, np.cumsum(value_bytes)[:-1])
        return np.concatenate([part for pair in zip(metas, pieces) for part in pair])
    lengths = map_lengths(meta_bits, value_bytes)
    bases = np.cumsum(lengths) - lengths
    out = np.zeros(int(lengths.sum()) + 1, np.uint8)  # one spare byte for the last map's carry
    meta_bytes = (meta_bits + 7) // 8
    if meta.size:
        padded = np.zeros(int(meta_bytes.sum()) * 8, bool)
        padded[_spread(meta_bits, (np.cumsum(meta_bytes) - meta_bytes) * 8)] = meta
        out[_spread(meta_bytes, bases)] = np.packbits(padded, bitorder="little")
    if values.size:
        shift = np.repeat((meta_bits % 8).astype(np.uint16), value_bytes)
        position = _spread(value_bytes, bases + meta_bits // 8)
        wide = values.astype(np.uint16) << shift
        out[position] |= (wide & 0xFF).astype(np.uint8)
        out[position + 1] |= (wide >> 8).astype(np.uint8)  # the high bits spill into the next byte (0 if aligned)
    return out[:-1]


def _ranges(data: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``data[starts[i] : starts[i] + counts[i]]`` for every map i, concatenated (one copy per map)."""
    pieces = [data[start:start + count] for start, count in zip(starts.tolist(), counts.tolist())]
    return np.concatenate(pieces) if pieces else data[:0]


def unpack_bits(payload: np.ndarray, bases: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Bits ``offsets[i] .. offsets[i] + counts[i]`` of map i (which starts at byte ``bases[i]``), concatenated."""
    first = offsets // 8
    nbytes = np.where(counts > 0, (offsets + counts + 7) // 8 - first, 0)
    bits = np.unpackbits(_ranges(payload, bases + first, nbytes), bitorder="little").view(bool)
    if not np.any(offsets % 8) and not np.any(counts % 8):
        return bits  # whole bytes: nothing to trim
    return bits[_spread(counts, (np.cumsum(nbytes) - nbytes) * 8 + offsets % 8)]


def unpack_bytes(payload: np.ndarray, bases: np.ndarray, bit_offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``counts[i]`` whole bytes of map i that start at bit ``bit_offsets[i]`` of it, concatenated."""
    if not np.any(bit_offsets % 8):
        return _ranges(payload, bases + bit_offsets // 8, counts)
    position = _spread(counts, bases + bit_offsets // 8)
    shift = np.repeat((bit_offsets % 8).astype(np.uint16), counts)
    padded = np.append(payload, np.uint8(0))
    low = padded[position].astype(np.uint16) >> shift
    high = padded[position + 1].astype(np.uint16) << (8 - shift)
    return ((low | high) & 0xFF).astype(np.uint8)
