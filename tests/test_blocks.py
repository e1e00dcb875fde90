"""Block tiling, scores, masks and their expansion, against loop-based references."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzebra.core import (
    apply_block_mask,
    block_element_counts,
    block_grid,
    block_mask,
    block_scores,
    block_shape,
    expand_blocks,
    nonzero_blocks,
    validate_block_size,
    validate_score,
)

block_sizes = st.one_of(st.integers(1, 9), st.just("map"))


def reference_blocks(x, block_size):
    """Yield (i, j, block tensor (N, C, h, w)) by plain slicing."""
    h, w = x.shape[-2:]
    bh, bw = (h, w) if block_size == "map" else (block_size, block_size)
    for i in range(math.ceil(h / bh)):
        for j in range(math.ceil(w / bw)):
            yield i, j, x[..., i * bh:(i + 1) * bh, j * bw:(j + 1) * bw]


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 11), w=st.integers(1, 11), block=block_sizes, score=st.sampled_from(["mean", "max", "rms"]))
def test_scores_match_per_block_reference(h, w, block, score):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    scores = block_scores(x, block, score)
    assert scores.shape[-2:] == block_grid(block, h, w)
    for i, j, part in reference_blocks(x, block):
        flat = part.abs().flatten(2)
        expected = {"mean": flat.mean(-1), "max": flat.amax(-1), "rms": flat.pow(2).mean(-1).sqrt()}[score]
        torch.testing.assert_close(scores[..., i, j], expected)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 11), w=st.integers(1, 11), block=block_sizes)
def test_mask_zeroes_exactly_the_low_blocks(h, w, block):
    x = torch.randn(2, 2, h, w)
    keep = block_mask(block_scores(x, block), 0.7)
    out = apply_block_mask(x, keep, block)
    for i, j, part in reference_blocks(out, block):
        kept = keep[..., i, j]
        original = next(p for a, b, p in reference_blocks(x, block) if (a, b) == (i, j))
        assert torch.equal(part[kept], original[kept])
        assert torch.all(part[~kept] == 0)


def test_partial_border_blocks_7x7():
    assert block_grid(4, 7, 7) == (2, 2)
    assert block_element_counts(4, 7, 7).tolist() == [[16, 12], [12, 9]]
    assert block_element_counts("map", 7, 7).tolist() == [[49]]
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 6, 6] = 9.0
    # the 3x3 corner block's mean divides by its 9 real elements
    assert block_scores(x, 4)[0, 0].tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_block_larger_than_map_is_one_block():
    assert block_shape(16, 7, 5) == (7, 5)
    assert block_grid(16, 7, 5) == (1, 1)
    x = torch.rand(1, 2, 7, 5)
    torch.testing.assert_close(block_scores(x, 16), x.mean((-2, -1), keepdim=True))


def test_expand_blocks_repeats_each_block_value():
    mask = torch.tensor([[[[1, 0], [0, 1]]]])
    full = expand_blocks(mask, 4, 7, 7)
    assert full.shape == (1, 1, 7, 7)
    assert full[0, 0, :4, :4].all() and not full[0, 0, :4, 4:].any() and full[0, 0, 4:, 4:].all()


def test_nonzero_blocks_sees_single_nonzero():
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 0, 5] = -1e-30
    assert nonzero_blocks(x, 4)[0, 0].tolist() == [[False, True], [False, False]]


def test_threshold_zero_keeps_every_value_bit_for_bit():
    x = torch.relu(torch.randn(4, 8, 9, 9))
    out = apply_block_mask(x, block_mask(block_scores(x, 4, nonnegative=True), 0.0), 4)
    assert torch.equal(out, x)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", None, True])
def test_invalid_block_size_names_parameter_and_allowed_values(bad):
    with pytest.raises(ValueError, match=r"block_size=.*positive integer.*'map'"):
        validate_block_size(bad)


def test_unknown_score():
    with pytest.raises(ValueError, match=r"score='median' is invalid: use one of mean, max, rms"):
        validate_score("median")


@pytest.mark.parametrize("h, w, block", [(9, 9, 2), (8, 12, 2), (4, 4, 2), (7, 5, "map"), (6, 6, 1)])
@pytest.mark.parametrize("score", ["mean", "rms"])
def test_score_gradients_are_exact(h, w, block, score):
    x = (torch.rand(2, 3, h, w, dtype=torch.float64) + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: block_scores(t, block, score), (x,))


@pytest.mark.parametrize("h, w, block", [(12, 12, 2), (11, 10, 2), (8, 8, 4)])
def test_masked_gradient_is_the_expanded_mask(h, w, block):
    x = torch.randn(2, 3, h, w, requires_grad=True)
    keep = block_mask(block_scores(x.detach(), block), 0.8)
    apply_block_mask(x, keep, block).sum().backward()
    assert torch.equal(x.grad, expand_blocks(keep, block, h, w).float())
