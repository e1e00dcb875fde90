"""Where every element goes in a stream: the block-major element order and the container header."""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..core import FORMAT_REGISTRY, BlockSize, block_element_counts, block_shape

MAGIC = b"ZBRA"
VERSION = 1
HEADER = struct.Struct("<4sBBBBIIIIIIQII")  # see docs/FORMAT.md
SIGNED, PER_CHANNEL, BATCHED = 1, 2, 4  # flag bits
FORMAT_CODES = {name: f.code for name, f in FORMAT_REGISTRY.items()}  # the header's format byte


@dataclass(frozen=True)
class Header:
    """The fixed fields of a stream (the tables that follow are the scales and the per-map byte lengths)."""

    fmt: str
    bits: int
    signed: bool
    per_channel: bool
    batched: bool
    shape: tuple[int, int, int, int]  # N, C, H, W
    block_size: BlockSize
    scales: int
    payload_bytes: int
    payload_crc: int

    def pack(self, tables: bytes) -> bytes:
        """The header bytes; its CRC covers the fixed fields and ``tables``."""
        flags = SIGNED * self.signed | PER_CHANNEL * self.per_channel | BATCHED * self.batched
        fields = (MAGIC, VERSION, FORMAT_CODES[self.fmt], self.bits, flags, *self.shape,
                  0 if self.block_size == "map" else self.block_size, self.scales, self.payload_bytes, self.payload_crc)
        head = HEADER.pack(*fields, 0)
        return head[:-4] + struct.pack("<I", zlib.crc32(tables, zlib.crc32(head[:-4])))


@functools.lru_cache(maxsize=64)
def block_order(channels: int, height: int, width: int, block_size: BlockSize) -> tuple[np.ndarray, np.ndarray]:
    """``(perm, starts)``: ``perm[k]`` is the raster index (c, h, w) of the k-th element in block-major order
    (channel, block row, block column, then row-major inside the block); ``starts[j]`` is where block j
    begins in that order. Cached and read-only. Only maps that blocks do not tile exactly need it."""
    bh, bw = block_shape(block_size, height, width)
    rows, cols = np.indices((height, width)).reshape(2, -1)
    plane = np.lexsort((cols, rows, cols // bw, rows // bh))  # last key first: block row, block col, row, col
    perm = (np.arange(channels)[:, None] * (height * width) + plane[None, :]).ravel()
    sizes = np.tile(block_element_counts(block_size, height, width).numpy().ravel(), channels)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    perm.setflags(write=False)
    starts.setflags(write=False)
    return perm, starts


def to_block_major(levels: np.ndarray, shape: tuple[int, int, int, int], block_size: BlockSize) -> np.ndarray:
    """``(N, E)`` raster levels reordered block-major (a strided copy when the blocks tile the map exactly)."""
    n, c, h, w = shape
    bh, bw = block_shape(block_size, h, w)
    if h % bh == 0 and w % bw == 0:
        blocks = torch.from_numpy(levels).reshape(n, c, h // bh, bh, w // bw, bw).permute(0, 1, 2, 4, 3, 5)
        return blocks.reshape(n, -1).numpy() if blocks.is_contiguous() else blocks.contiguous().reshape(n, -1).numpy()
    return levels[:, block_order(c, h, w, block_size)[0]]


def from_block_major(ordered: np.ndarray, shape: tuple[int, int, int, int], block_size: BlockSize) -> np.ndarray:
    """The inverse of ``to_block_major``: ``(N, E)`` block-major levels back in raster order."""
    n, c, h, w = shape
    bh, bw = block_shape(block_size, h, w)
    if h % bh == 0 and w % bw == 0:
        blocks = torch.from_numpy(ordered).reshape(n, c, h // bh, w // bw, bh, bw).permute(0, 1, 2, 4, 3, 5)
        return blocks.contiguous().reshape(n, -1).numpy()
    out = np.empty_like(ordered)
    out[:, block_order(c, h, w, block_size)[0]] = ordered
    return out


def block_sizes(shape: tuple[int, int, int, int], block_size: BlockSize) -> np.ndarray:
    """Element count of every block of one map, block-major (``B`` entries)."""
    _, c, h, w = shape
    return np.tile(block_element_counts(block_size, h, w).numpy().ravel(), c)


def occupied_blocks(nonzero: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``(N, B)``: which blocks hold a non-zero, from the block-major ``(N, E)`` non-zero mask."""
    n = nonzero.shape[0]
    if np.all(sizes == sizes[0]):
        return nonzero.reshape(n, sizes.size, int(sizes[0])).any(2)
    return np.logical_or.reduceat(nonzero, np.cumsum(sizes) - sizes, axis=1)
