"""core.quantile: torch.quantile's value bit for bit, by selection instead of a sort."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzebra.core import quantile

_SPECIAL = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-45, -1e-45, 3.4e38]


@st.composite
def _vectors(draw):
    """float32 vectors with ties, both zeros, subnormals, infinities and NaN, and a q in [0, 1] (its ends too)."""
    n = draw(st.integers(1, 3000))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.randn(n, generator=generator) * draw(st.sampled_from([1.0, 1e-40, 1e30]))
    if draw(st.booleans()):  # non-negative scores, as calibration takes them, rounded to bfloat16: many ties
        values = values.abs().bfloat16().float()
    for special in draw(st.lists(st.sampled_from(_SPECIAL), max_size=3)):
        values[torch.rand(n, generator=generator) < draw(st.sampled_from([0.01, 0.3]))] = special
    q = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.81]), st.floats(0.0, 1.0)))
    return values, q


@settings(max_examples=400, deadline=None)
@given(_vectors())
def test_the_quantile_is_torchs_bit_for_bit(case):
    values, q = case
    ours, theirs = quantile(values, q), torch.quantile(values, q)
    assert ours.dtype == torch.float32 and ours.shape == ()
    assert ours.view(torch.int32) == theirs.view(torch.int32) or (ours.isnan() and theirs.isnan())


@pytest.mark.parametrize("rounded", [False, True])  # continuous values (the weight matters), or bf16's ties
def test_a_large_vector_takes_the_same_value(rounded):
    values = torch.rand(500_001, generator=torch.Generator().manual_seed(0)).pow(3)
    values = values.bfloat16().float() if rounded else values
    for q in (0.19, 0.6, 0.81, 0.9, 0.999):
        assert quantile(values, q).view(torch.int32) == torch.quantile(values, q).view(torch.int32)


@pytest.mark.parametrize("values, q", [(torch.rand(3, 4), 0.5), (torch.rand(5).double(), 0.5),
                                       (torch.empty(0), 0.5), (torch.rand(5), 1.5)])
def test_what_it_does_not_take_is_named(values, q):
    with pytest.raises(ValueError, match="quantile"):
        quantile(values, q)
