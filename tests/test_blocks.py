"""Block tiling, scores, masks and their expansion, against loop-based references."""

import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from torchzebra.core import (
    apply_block_mask,
    block_element_counts,
    block_grid,
    block_mask,
    block_nonzero_counts,
    block_scores,
    block_shape,
    blocks,
    expand_blocks,
    nonzero_blocks,
    validate_block_size,
    validate_score,
)
from torchzebra.core.blocks import block_keep
from torchzebra.nn.layer import ZebraLayer

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
@given(h=st.integers(1, 11), w=st.integers(1, 11), block=block_sizes, plain=st.booleans(), channels_last=st.booleans())
def test_nonzero_counts_match_per_block_reference(h, w, block, plain, channels_last):
    """Integer counts over the block view (GPU, compiled) and float sums of 0/1 (eager CPU) count the same."""
    x = torch.randn(2, 3, h, w).relu()
    x[0, 1] = 0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with mock.patch.object(blocks, "_plain_views", lambda _: plain):
        counts = block_nonzero_counts(x, block)
    assert counts.dtype == torch.int64 and counts.shape[-2:] == block_grid(block, h, w)
    for i, j, part in reference_blocks(x, block):
        assert torch.equal(counts[..., i, j], (part != 0).flatten(2).sum(-1))


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


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 11), w=st.integers(1, 11), c=st.integers(2, 5), block=block_sizes, inplace=st.booleans())
def test_a_channels_last_map_is_masked_in_its_own_layout(h, w, c, block, inplace):
    x = torch.randn(2, c, h, w)
    keep = block_mask(block_scores(x, block), 0.7)
    want = apply_block_mask(x, keep, block)
    cl = x.contiguous(memory_format=torch.channels_last)
    got = apply_block_mask(cl, keep, block, inplace=inplace)
    assert bits(got).equal(bits(want)) and got.is_contiguous(memory_format=torch.channels_last)
    assert not inplace or got.data_ptr() == cl.data_ptr()


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 11), w=st.integers(1, 11), block=block_sizes, score=st.sampled_from(["mean", "max", "rms"]),
       channels_last=st.booleans(), inplace=st.booleans())
def test_the_gpu_formulation_equals_the_cpu_one(h, w, block, score, channels_last, inplace):
    """The plain block views used on GPUs give the CPU path's masks, outputs and gradients (the sums are
    added in another order, so scores agree to rounding)."""
    x = torch.randn(2, 3, h, w).relu()
    x[0, 1] = 0  # exact-zero blocks: threshold 0 must keep exactly the others on both paths
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for plain in (False, True):
        with mock.patch.object(blocks, "_plain_views", lambda _: plain):
            leaf = (x + 1).requires_grad_(True)  # no all-zero block, where the RMS has no gradient
            scores = block_scores(leaf, block, score)
            scores.square().sum().backward()
            keep = block_keep(x, block, score, 0.0)
            masked = apply_block_mask(x.clone(), keep, block, inplace=inplace)
            results.append((scores.detach(), leaf.grad, keep, masked))
    (s_cpu, g_cpu, k_cpu, out_cpu), (s_plain, g_plain, k_plain, out_plain) = results
    torch.testing.assert_close(s_plain, s_cpu)
    torch.testing.assert_close(g_plain, g_cpu)
    assert torch.equal(k_plain, k_cpu) and bits(out_plain).equal(bits(out_cpu))


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


SCORES = ["mean", "max", "rms"]
HALF_AND_SINGLE = [torch.float32, torch.float16, torch.bfloat16]


def bits(t):
    """The raw bits of ``t``: equal bits mean the same value, sign of zero and NaN payload included."""
    return t.view({4: torch.int32, 2: torch.int16}[t.element_size()])


def reference_mask(x, block, score, threshold):
    """The keep mask by the definition, in float64: pooled mean |x|, max |x| or RMS > threshold."""
    h, w = x.shape[-2:]
    kernel = (h, w) if block == "map" else (min(block, h), min(block, w))
    magnitude = x.double().abs()
    pooled = {
        "mean": lambda: F.avg_pool2d(magnitude, kernel, kernel, ceil_mode=True),
        "max": lambda: F.max_pool2d(magnitude, kernel, kernel, ceil_mode=True),
        "rms": lambda: F.avg_pool2d(magnitude**2, kernel, kernel, ceil_mode=True).sqrt(),
    }[score]()
    return pooled > threshold, pooled


@settings(max_examples=80, deadline=None)
@given(
    size=st.sampled_from([8, 15, 32]), block=st.sampled_from([2, 4]), score=st.sampled_from(SCORES),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]), threshold=st.sampled_from([0.0, 0.5, 2.0]),
    row=st.integers(0, 31), col=st.integers(0, 31),
)
def test_nan_or_inf_is_kept_in_its_block_and_leaves_the_others_alone(size, block, score, bad, threshold, row, col):
    # 8x8 maps have at most 16 blocks (the small-grid products), 32x32 maps 64 or 256, 15x15 partial ones
    x = torch.randn(2, 3, size, size)
    row, col = row % size, col % size
    poisoned = x.clone()
    poisoned[1, 2, row, col] = bad
    layer = ZebraLayer("site", block_size=block, score=score, threshold=threshold)
    clean, dirty = layer(x), layer(poisoned)
    i, j = row // block, col // block
    own = (1, 2, slice(i * block, (i + 1) * block), slice(j * block, (j + 1) * block))
    assert bits(dirty[own]).equal(bits(poisoned[own]))  # kept, unchanged
    dirty[own], clean[own] = 0.0, 0.0
    assert bits(dirty).equal(bits(clean))
    assert block_keep(poisoned, block, score, threshold)[1, 2, i, j]
    scores, clean_scores = block_scores(poisoned, block, score), block_scores(x, block, score)
    assert not torch.isfinite(scores[1, 2, i, j])
    scores[1, 2, i, j] = clean_scores[1, 2, i, j]
    assert torch.equal(scores, clean_scores)


def test_one_inf_in_an_8x8_map_at_threshold_0_zeroes_nothing():
    x = torch.ones(1, 1, 8, 8)
    x[0, 0, 0, 0] = float("inf")
    out = apply_block_mask(x, block_keep(x, 2, "mean", 0.0), 2)
    assert bits(out).equal(bits(x))


def test_a_nan_or_inf_score_is_kept_even_at_an_infinite_threshold():
    scores = torch.tensor([float("inf"), float("nan"), 1.0, 0.0])
    assert block_mask(scores, float("inf")).tolist() == [True, True, False, False]
    assert block_mask(scores, torch.tensor(0.5)).tolist() == [True, True, True, False]


def awkward_map(seed, shape, dtype, kind, sparsity):
    """Finite values of ``dtype``: subnormals only, values around ``tiny`` or any exponent; zeros of both signs."""
    g = torch.Generator().manual_seed(seed)
    info = torch.finfo(dtype)
    low = math.log2(info.tiny * info.eps)  # the exponent of the smallest subnormal
    high = {"subnormal": math.log2(info.tiny), "tiny": math.log2(info.tiny) + 4, "wide": math.log2(info.max)}[kind]
    exponent = low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double()
    x = (sign * torch.exp2(exponent)).to(dtype)
    zero = torch.rand(shape, generator=g) < sparsity
    return torch.where(zero, sign.to(dtype) * 0.0, x)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31), dtype=st.sampled_from(HALF_AND_SINGLE), score=st.sampled_from(SCORES),
    block=st.sampled_from([1, 2, 3, 4, "map", 40]), h=st.integers(1, 11), w=st.integers(1, 11),
    kind=st.sampled_from(["subnormal", "tiny", "wide"]), sparsity=st.sampled_from([0.0, 0.9, 0.99, 1.0]),
    nonnegative=st.booleans(),
)
def test_threshold_zero_is_bit_exact_on_any_finite_input(seed, dtype, score, block, h, w, kind, sparsity, nonnegative):
    x = awkward_map(seed, (2, 3, h, w), dtype, kind, sparsity)
    x = x.abs() if nonnegative else x
    keep = block_keep(x, block, score, 0.0, nonnegative)
    assert torch.equal(keep, nonzero_blocks(x, block))  # threshold 0 keeps exactly the blocks with a non-zero
    assert bits(apply_block_mask(x, keep, block)).equal(bits(x))
    layer = ZebraLayer("site", block_size=block, score=score, nonnegative=nonnegative)
    assert bits(layer(x)).equal(bits(x))


def test_a_block_of_one_fp16_subnormal_survives_threshold_zero():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float16)
    x[0, 0, 5, 6] = torch.finfo(torch.float16).tiny / 1024  # the smallest fp16 subnormal; its block mean is 0
    for score in SCORES:
        assert bits(ZebraLayer("site", block_size=4, score=score)(x)).equal(bits(x))


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**31), dtype=st.sampled_from(HALF_AND_SINGLE), score=st.sampled_from(SCORES),
    block=st.sampled_from([1, 2, 3, 4, 8, "map", 40]), h=st.integers(1, 33), w=st.integers(1, 33),
    threshold=st.floats(0.0, 1.5), channels_last=st.booleans(),
)
def test_masks_of_ordinary_inputs_match_the_float64_definition(seed, dtype, score, block, h, w, threshold,
                                                               channels_last):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, h, w, generator=g).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected, pooled = reference_mask(x, block, score, threshold)
    clear = (pooled - threshold).abs() > 1e-5 * max(threshold, 1e-3)  # blocks not tied with the threshold
    keep = block_keep(x, block, score, torch.tensor(threshold))
    assert torch.equal(keep[clear], expected[clear])
    torch.testing.assert_close(block_scores(x, block, score), pooled.to(dtype))


@pytest.mark.parametrize("score", SCORES)
def test_the_layer_exports_and_compiles_without_graph_breaks(score):
    # map sizes of no other test, so no helper tensor is cached yet when the tracers run
    for block, shape in ((5, (2, 3, 10, 14)), (2, (2, 3, 10, 14)), (3, (2, 3, 6, 6))):
        layer = ZebraLayer("site", block_size=block, score=score, threshold=0.5).eval()
        exported = torch.export.export(layer, (torch.randn(shape),)).module()
        torch._dynamo.reset()  # a fresh compile per layer, well under the recompile limit
        compiled = torch.compile(layer, fullgraph=True, backend="eager")
        x = torch.randn(shape)
        assert torch.equal(exported(x), layer(x)) and torch.equal(compiled(x), layer(x))


def test_autocast_does_not_round_the_block_sums():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 5, 5], x[0, 0, 5, 6] = 1.0, 1.0 + 2**-7  # block sum 2.0078125: 2.0 once rounded to bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block_keep(x, 4, "mean", 2.0 / 16).flatten().tolist() == [False, False, False, True]
        assert block_scores(x, 4)[0, 0, 1, 1] == 2.0078125 / 16


class _NewFullSizeTensors(TorchDispatchMode):
    """Records the op that made each new storage as large as ``like``, a full-size temporary: (op name, storage)."""

    def __init__(self, like: torch.Tensor) -> None:
        super().__init__()
        self.like, self.found = like, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            storage = t.untyped_storage().data_ptr() if isinstance(t, torch.Tensor) else None
            if storage is not None and t.numel() >= self.like.numel() and storage not in (
                    self.like.untyped_storage().data_ptr(), *(ptr for _, ptr in self.found)):
                self.found.append((func.__name__, storage))
        return out


@pytest.mark.parametrize("plain", [False, True], ids=["eager-cpu", "block-views"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape, block", [((4, 8, 32, 32), 4), ((4, 8, 16, 16), 4), ((4, 8, 15, 17), 4),
                                          ((4, 8, 7, 7), 4), ((4, 8, 16, 16), "map")])
def test_the_block_sums_of_a_relu_map_copy_it_only_where_documented(plain, dtype, channels_last, shape, block):
    """Block views (GPUs, torch.compile) sum a half map in float32 inside the reduction and copy it only to pad
    partial blocks; the eager CPU paths cast a contiguous half map whole to float32 first (faster there) and
    widen a channels_last one as its rows are added (no full-size copy). Either way the mask equals the one of
    the float32 map."""
    x = torch.relu(torch.randn(shape)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with mock.patch.object(blocks, "_plain_views", lambda _: plain), _NewFullSizeTensors(x) as ops:
        keep = block_keep(x, block, "mean", 0.5, nonnegative=True)
    partial = any(size % b for size, b in zip(shape[-2:], block_shape(block, *shape[-2:])))
    expected = (["constant_pad_nd.default"] if partial else []) if plain else (
        [] if dtype == torch.float32 or channels_last else ["_to_copy.default"])
    assert [op for op, _ in ops.found] == expected
    counts = block_element_counts(block, *shape[-2:], dtype=torch.float32)
    block_hw = block_shape(block, *shape[-2:])
    assert torch.equal(keep, blocks._above(blocks._block_sums(x.float().contiguous(), block_hw), 0.5 * counts))


@pytest.mark.parametrize("plain", [False, True], ids=["eager-cpu", "block-views"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, block, channels_last", [((4, 8, 32, 32), 4, False), ((4, 8, 32, 32), 4, True),
                                                         ((4, 8, 16, 16), 4, True), ((4, 8, 16, 16), "map", False)])
def test_a_mask_takes_no_full_size_temporary_where_the_blocks_tile_the_map(plain, dtype, shape, block, channels_last):
    """Contiguous maps of more than 16 blocks and whole-map blocks, and channels_last maps under block views, are
    masked through a broadcast: the output is the one new full-size tensor, and in place there is none. The eager
    CPU path expands a channels_last map's mask in full first (one more full-size tensor, faster there)."""
    x = torch.relu(torch.randn(shape)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    keep = block_keep(x, block, "mean", 0.5, nonnegative=True)
    target = x.clone()
    with mock.patch.object(blocks, "_plain_views", lambda _: plain):
        with _NewFullSizeTensors(x) as ops:
            out = apply_block_mask(x, keep, block)
        with _NewFullSizeTensors(target) as inplace_ops:
            apply_block_mask(target, keep, block, inplace=True)
    full_mask = channels_last and not plain
    assert [ptr for _, ptr in ops.found][-1] == out.untyped_storage().data_ptr()
    assert len(ops.found) == 1 + full_mask and len(inplace_ops.found) == full_mask
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(target, out)
