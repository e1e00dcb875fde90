"""``torch.quantile`` of a float32 vector on the CPU, bit for bit, found by selection among a few values.

Threshold calibration takes one quantile of every map's block scores (half a million of them for a batch of 128
on the main job's first maps), which was half of what a recalibration cost. Here the two order statistics that
linear interpolation needs are found by one counting pass over the values' top bits and a selection among the
values of the one bucket that holds them, then interpolated with torch.quantile's own arithmetic: its rank
``q * (n - 1)`` in double precision from q rounded to float32, the weight rounded to float32, ``torch.lerp``.
That rank is torch's from release 2.14 (earlier releases take it in float32); there, and on other devices,
``quantile`` is ``torch.quantile`` itself.
"""

from __future__ import annotations

import math

import torch
from torch.torch_version import TorchVersion

_BUCKET_SHIFT = 20  # the top 12 bits of an order-preserving int32 key: 4,096 buckets
_BUCKETS = 1 << (32 - _BUCKET_SHIFT)
_DOUBLE_RANKS = TorchVersion(torch.__version__) >= "2.14"  # torch.quantile's rank in double precision


def _order_keys(values: torch.Tensor) -> torch.Tensor:
    """int32 keys that order like the float32 ``values`` (no NaN): the bits of a positive float, the other bits
    flipped for a negative one (so -0.0 sorts just before +0.0)."""
    bits = values.view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _order_statistics(keys: torch.Tensor, ranks: tuple[int, int]) -> list[int]:
    """The keys at 0-based ``ranks`` of ``keys`` sorted, each found among its bucket's keys only."""
    buckets = (keys >> _BUCKET_SHIFT) + _BUCKETS // 2
    counts = torch.bincount(buckets, minlength=_BUCKETS)
    ends = counts.cumsum(0)
    found: dict[int, int] = {}
    members: dict[int, torch.Tensor] = {}  # the keys of each bucket a rank falls in (both ranks, nearly always one)
    for rank in ranks:
        bucket = int(torch.searchsorted(ends, rank, right=True))
        if bucket not in members:
            members[bucket] = keys[buckets == bucket]
        within = rank - int(ends[bucket] - counts[bucket])
        found[rank] = int(members[bucket].kthvalue(within + 1).values)
    return [found[rank] for rank in ranks]


def _float_of(key: int) -> torch.Tensor:
    """The float32 whose order key is ``key`` (``_order_keys`` undone), as a 0-d tensor."""
    bits = key ^ 0x7FFFFFFF if key < 0 else key
    return torch.tensor(bits, dtype=torch.int32).view(torch.float32)


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) of a float32 vector, the same bits, in a few passes over
    ``values`` on the CPU. A NaN among the values, or a zero quantile where -0.0 is among them (a sort may order
    the two zeros either way), is left to torch.quantile, and so are other devices and torch before 2.14."""
    if values.dim() != 1 or values.dtype != torch.float32 or not 0.0 <= q <= 1.0 or values.numel() == 0:
        raise ValueError(f"quantile() takes a non-empty float32 vector and q in [0, 1], not {values.dtype} "
                         f"{tuple(values.shape)} and q={q}")
    if values.device.type != "cpu" or not _DOUBLE_RANKS or bool(values.isnan().any()):
        return torch.quantile(values, q)
    rank = float(torch.tensor(q, dtype=torch.float32)) * (values.numel() - 1)  # in double, as torch takes it
    below, above = int(rank), math.ceil(rank)
    keys = _order_keys(values.contiguous())
    lower, upper = _order_statistics(keys, (below, above))
    if (lower in (0, -1) or upper in (0, -1)) and bool((keys == -1).any()):
        return torch.quantile(values, q)
    weight = torch.tensor(rank - below, dtype=torch.float32)
    return _float_of(lower).lerp(_float_of(upper), weight)
