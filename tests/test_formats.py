"""Bit and byte counts per format (docs/METHOD.md section 3): hand-computed cases and properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzebra.core import FORMATS, TrafficTally, bits_to_bytes, map_bits, map_counts, validate_format


def corner_map():
    """One 7x7 channel with non-zeros in the top-left 4x4 block and the bottom-right 3x3 block."""
    x = torch.zeros(1, 7, 7)
    x[0, 0, 0] = 1.0
    x[0, 6, 6] = 2.0
    return x


def test_hand_computed_7x7_with_4x4_blocks():
    counts = map_counts(corner_map(), 4)
    assert (counts.elements, counts.blocks) == (49, 4)
    assert counts.nonzero.item() == 2 and counts.nonzero_blocks.item() == 2
    assert counts.nonzero_block_elements.item() == 16 + 9
    bits = {k: v.item() for k, v in map_bits(corner_map(), 4, bits=8).items()}
    assert bits == {"dense": 392, "zvc": 49 + 16, "zebra": 4 + 25 * 8, "zebra_zvc": 4 + 25 + 16}
    assert {k: bits_to_bytes(v) for k, v in bits.items()} == {"dense": 49, "zvc": 9, "zebra": 26, "zebra_zvc": 6}


def test_hand_computed_map_block():
    bits = {k: v.item() for k, v in map_bits(corner_map(), "map", bits=8).items()}
    assert bits == {"dense": 392, "zvc": 65, "zebra": 1 + 49 * 8, "zebra_zvc": 1 + 49 + 16}


def test_hand_computed_16_bit_two_channels_one_empty():
    x = torch.zeros(2, 4, 4)
    x[1, 2:4, 0:2] = 5.0  # exactly one 2x2 block of channel 1, fully non-zero
    bits = {k: v.item() for k, v in map_bits(x, 2, bits=16).items()}
    assert bits == {"dense": 32 * 16, "zvc": 32 + 4 * 16, "zebra": 8 + 4 * 16, "zebra_zvc": 8 + 4 + 4 * 16}
    x[1, 2:4, 0:2] = 0.0
    x[1, 1:3, 1:3] = 5.0  # the same four values straddling four blocks: same ZVC, four times the Zebra payload
    assert map_counts(x, 2).nonzero_blocks.item() == 4
    assert map_bits(x, 2, bits=16)["zebra"].item() == 8 + 16 * 16


def test_batch_counts_each_map_separately():
    x = torch.stack([corner_map(), torch.zeros(1, 7, 7)])
    bits = map_bits(x, 4)
    assert bits["zebra"].tolist() == [204, 4]
    assert bits["zvc"].tolist() == [65, 49]


maps = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.floats(0.0, 1.0)).map(
    lambda t: torch.where(torch.rand(t[:3]) < t[3], torch.randn(t[:3]), torch.zeros(t[:3]))
)
blocks = st.one_of(st.integers(1, 10), st.just("map"))


@settings(max_examples=80, deadline=None)
@given(x=maps, block=blocks, q=st.sampled_from([1, 4, 8, 16, 32]))
def test_format_bounds(x, block, q):
    counts = map_counts(x, block)
    bits = map_bits(x, block, bits=q)
    assert bits["zebra"].item() <= bits["dense"].item() + counts.blocks
    assert bits["zebra_zvc"].item() <= bits["zvc"].item() + counts.blocks
    assert bits["zebra_zvc"].item() <= bits["zebra"].item() + counts.nonzero_block_elements.item()
    assert counts.nonzero.item() <= counts.nonzero_block_elements.item() <= counts.elements


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)), block=blocks, q=st.integers(1, 16))
def test_zvc_of_map_without_zeros_is_dense_plus_one_bit_per_element(shape, block, q):
    x = torch.rand(shape) + 0.5
    bits = map_bits(x, block, bits=q)
    elements = shape[0] * shape[1] * shape[2]
    assert bits["zvc"].item() == bits["dense"].item() + elements
    assert bits["zebra"].item() == bits["dense"].item() + map_counts(x, block).blocks


@settings(max_examples=40, deadline=None)
@given(x=maps, block=blocks)
def test_nonzero_block_elements_match_loop_reference(x, block):
    c, h, w = x.shape
    b = (h, w) if block == "map" else (block, block)
    expected = sum(
        part.numel()
        for ch in range(c)
        for i in range(0, h, b[0])
        for j in range(0, w, b[1])
        if (part := x[ch, i:i + b[0], j:j + b[1]]).count_nonzero()
    )
    counts = map_counts(x, block)
    assert counts.nonzero_block_elements.item() == expected
    assert counts.nonzero.item() == torch.count_nonzero(x).item()


def test_counts_exact_for_denormals_and_large_maps():
    x = torch.zeros(1, 3, 49, 47)
    x[0, 0, 48, 46] = 1e-45  # a denormal alone in a partial corner block
    x[0, 2, :, :] = 1.0
    counts = map_counts(x, "map")
    assert counts.nonzero.item() == 1 + 49 * 47 and counts.nonzero_blocks.item() == 2
    assert map_counts(x, 4).nonzero_block_elements.item() == 3 + 49 * 47  # the 1x3 corner block counts


def test_tally_rounds_bytes_up_per_map():
    tally = TrafficTally(4, bits=8)
    tally.add(torch.stack([corner_map(), corner_map()]))
    assert tally.maps == 2 and tally.shape == (1, 7, 7)
    assert {k: int(v) for k, v in tally.map_bytes.items()} == {"dense": 98, "zvc": 18, "zebra": 52, "zebra_zvc": 12}


def test_tally_mixed_shapes():
    tally = TrafficTally(4)
    tally.add(torch.ones(1, 1, 7, 7))
    tally.add(torch.ones(1, 1, 8, 8))
    assert tally.shape is None and tally.elements == 49 + 64 and tally.blocks == 8


def test_unknown_format_and_bits():
    with pytest.raises(ValueError, match="format='rle' is invalid: use one of dense, zvc, zebra, zebra_zvc"):
        validate_format("rle")
    with pytest.raises(ValueError, match="bits=0 is invalid"):
        map_bits(corner_map(), 4, bits=0)
    assert FORMATS == ("dense", "zvc", "zebra", "zebra_zvc")
