"""The fused Triton kernels against the PyTorch reference: masks, masked outputs and block counts bit for bit,
penalties and gradients to rounding, in every dtype and layout. Without a GPU they run in Triton's interpreter
(``TRITON_INTERPRET=1``, set by conftest.py before Triton is imported); on a GPU, on the GPU. The kernels are
opt-in (off by default): the tests that go through the layers turn them on."""

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torchzebra as tz
from torchzebra.core import (
    apply_block_mask,
    block_keep,
    block_nonzero_counts,
    block_penalty,
    fused,
    fused_kernels,
    fused_kernels_enabled,
    masked_activation,
    set_fused_kernels,
)
from torchzebra.core.penalty import penalty_from_moments

pytest.importorskip("triton", reason="the fused kernels need Triton (torch's CUDA builds install it)")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (Inf and the sign of zero included), NaN where the other has NaN (payloads aside)."""
    def bits(x):
        return torch.where(x.isnan(), 0, x).contiguous().view({2: torch.int16, 4: torch.int32}[x.element_size()])
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(bits(a), bits(b))


def dyadic_map(shape, dtype, channels_last, specials=False, generator=None) -> torch.Tensor:
    """Multiples of 1/8 in [-2, 2] (block sums exact in any order and dtype), a third of the channels all zero,
    optionally a NaN, an Inf and a -0.0."""
    x = torch.randint(-16, 17, shape, generator=generator).float() / 8
    x[:, ::3] = 0
    if specials and x.numel() >= 3:
        flat = x.view(-1)
        flat[0], flat[x.numel() // 2], flat[-1] = float("nan"), float("inf"), -0.0
    x = x.to(DEVICE, DTYPES[dtype])
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.slow  # 40 examples through Triton's interpreter
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 5), h=st.integers(1, 11), w=st.integers(1, 11),
       block=st.one_of(st.integers(1, 5), st.just("map")), score=st.sampled_from(["mean", "max", "rms"]),
       dtype=st.sampled_from(sorted(DTYPES)), channels_last=st.booleans(), nonnegative=st.booleans(),
       threshold=st.sampled_from([0.0, 0.3, 1.0, -1.0, float("inf"), -float("inf"), float("nan")]),
       specials=st.booleans(),
       tile=st.sampled_from([16, 4096]), seed=st.integers(0, 2**16))
def test_fused_forward_equals_the_reference(n, c, h, w, block, score, dtype, channels_last, nonnegative, threshold,
                                            specials, tile, seed):
    """tile 16: a program takes fewer channels than the map has (several programs per block row)."""
    x = dyadic_map((n, c, h, w), dtype, channels_last, specials, torch.Generator().manual_seed(seed))
    if nonnegative:
        x = x.abs()
    keep = block_keep(x, block, score, torch.tensor(threshold), nonnegative)
    want = apply_block_mask(x, keep, block)
    with mock.patch.object(fused, "_TILE", tile):
        got = masked_activation(x, block, score, torch.tensor(threshold), nonnegative, count=True)
    assert same(got.output, want) and got.output.stride() == x.stride()
    assert torch.equal(got.nonzero.long(), block_nonzero_counts(want, block))


CASES = [("float32", "mean", (2, 4, 7, 9), 3, False), ("float32", "rms", (2, 4, 8, 8), 4, False),
         ("bfloat16", "max", (2, 4, 7, 9), 3, True), ("float16", "mean", (2, 3, 5, 6), "map", True)]


@pytest.mark.parametrize("penalty", ["group_lasso", "l1", "l2"])
@pytest.mark.parametrize("dtype, score, shape, block, nonnegative", CASES)
@pytest.mark.parametrize("channels_last", [False, pytest.param(True, marks=pytest.mark.slow)])  # the interpreter:
@pytest.mark.parametrize("upstream", ["dense", pytest.param("expanded", marks=pytest.mark.slow)])  # a second each
def test_fused_penalty_and_gradients_equal_the_reference(penalty, dtype, score, shape, block, nonnegative,
                                                         channels_last, upstream):
    """All-zero blocks included; "expanded": the output's gradient arrives with stride 0 (``out.sum()``)."""
    x = dyadic_map(shape, dtype, channels_last)
    x = x.abs() if nonnegative else x
    weights = torch.randn(x.shape).to(x)
    results = []
    for fused_path in (False, True):
        leaf = x.clone().requires_grad_(True)
        if fused_path:
            with mock.patch.object(fused, "_TILE", 16):
                out, moments, _ = masked_activation(leaf, block, score, torch.tensor(0.3), nonnegative, penalty=penalty)
            value = penalty_from_moments(moments, penalty)
        else:
            out = apply_block_mask(leaf, block_keep(leaf, block, score, torch.tensor(0.3), nonnegative), block)
            value = block_penalty(leaf, block, penalty, nonnegative)
        task = out.sum().float() if upstream == "expanded" else (out * weights).float().sum()
        (task + 10 * value.float()).backward()
        results.append((out.detach(), value.float().detach(), leaf.grad))
    (want, want_value, want_grad), (got, got_value, got_grad) = results
    assert same(got, want) and torch.isfinite(got_grad).all()
    tolerance = {} if dtype == "float32" else {"rtol": 2e-2, "atol": 2e-2}  # the reference rounds twice
    torch.testing.assert_close(got_value, want_value, **tolerance)
    torch.testing.assert_close(got_grad, want_grad, **tolerance)


@pytest.mark.parametrize("dtype, channels_last", [("float32", False), ("bfloat16", True)])
def test_fused_inplace_overwrites_the_input(dtype, channels_last):
    x = dyadic_map((2, 3, 8, 8), dtype, channels_last)
    want = apply_block_mask(x, block_keep(x, 4, "mean", 0.3), 4)
    with torch.no_grad():
        got = masked_activation(x, 4, "mean", torch.tensor(0.3), inplace=True).output
    assert got is x and same(x, want)


def test_fused_inplace_refuses_a_map_whose_elements_share_memory():
    """As PyTorch's in-place ops do: an expanded view would be written by several programs at once."""
    expanded = dyadic_map((1, 3, 1, 8), "float32", False).expand(2, 3, 8, 8)
    with torch.no_grad(), pytest.raises(ValueError, match="share memory.*clone"):
        masked_activation(expanded, 4, "mean", torch.tensor(0.3), inplace=True)
    assert not fused._may_overlap(dyadic_map((2, 3, 8, 8), "float32", True)[:, 1:, ::2, 1:])  # a sliced view: fine
    assert fused._may_overlap(torch.ones(3, 1).expand(3, 4).unsqueeze(0).unsqueeze(0))


def test_the_kernels_refuse_second_derivatives():
    """The kernel's gradient has no graph of its own: double backward is refused, never silently wrong."""
    leaf = dyadic_map((1, 2, 4, 4), "float32", False).requires_grad_(True)
    out = masked_activation(leaf, 2, "mean", torch.tensor(0.0)).output
    (grad,) = torch.autograd.grad(out.square().sum(), leaf, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|does not require grad"):
        grad.sum().backward()


def test_usable_only_where_the_kernels_help(monkeypatch):
    monkeypatch.delenv(fused.ENVIRONMENT_VARIABLE, raising=False)
    x = torch.ones(2, 3, 8, 8)
    with fused_kernels(True):
        assert not fused.usable(x, 4)  # CPU maps take the plain PyTorch path
    if torch.cuda.is_available():
        gpu = x.cuda()
        assert not fused.usable(gpu, 4)  # opt-in: off by default
        with fused_kernels(True):
            assert fused.usable(gpu, 4) and not fused.usable(gpu.double(), 4) and not fused.usable(gpu[0, 0], 4)
            assert not fused.usable(torch.ones(1, 1, 200, 200, device="cuda"), "map")  # one block row too large
    for unfit in (torch.ones(1, 1, 200, 200), torch.ones(0, 3, 8, 8), torch.ones(3, 8, 8)):
        with pytest.raises(ValueError, match="cannot take this map"):
            masked_activation(unfit, "map", "mean", torch.tensor(0.0))
    with pytest.raises(ValueError, match="under torch.no_grad"):
        masked_activation(torch.ones(1, 1, 4, 4, requires_grad=True), 2, "mean", torch.tensor(0.0), inplace=True)


@pytest.fixture
def fused_calls(monkeypatch) -> list:
    """Let layers take the fused path on this machine's device too (the interpreter, without a GPU), with the
    kernels off as by default (no setting, no environment variable); the list gets each fused call's map."""
    calls, real = [], fused.masked_activation
    monkeypatch.setattr(fused, "_kernel_device", lambda x: True)
    monkeypatch.setattr(fused, "_setting", None)  # and back to what it was after the test
    monkeypatch.delenv(fused.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(fused, "masked_activation",
                        lambda *args, **kwargs: calls.append(args[0]) or real(*args, **kwargs))
    return calls


@pytest.fixture
def kernels_on(fused_calls) -> list:
    """``fused_calls`` with the kernels turned on, as a user opts in."""
    with fused_kernels(True):
        yield fused_calls


def test_the_kernels_are_off_unless_turned_on(residual_net, fused_calls, monkeypatch):
    """Opt-in until they have run on a GPU: layers take the PyTorch path unless the environment variable or the
    setting turns the kernels on; the setting wins over the environment, and None hands back to it."""
    model = tz.prepare(residual_net.to(DEVICE).train(), tz.ZebraConfig(block_size=2))
    x = torch.randn(2, 1, 8, 8, device=DEVICE)
    model(x)
    assert not fused_kernels_enabled() and fused_calls == []
    monkeypatch.setenv(fused.ENVIRONMENT_VARIABLE, "1")
    model(x)
    assert len(fused_calls) == 2  # both layers
    set_fused_kernels(False)
    model(x)
    assert len(fused_calls) == 2
    monkeypatch.setenv(fused.ENVIRONMENT_VARIABLE, "0")
    set_fused_kernels(True)
    model(x)
    assert len(fused_calls) == 4
    set_fused_kernels(None)
    assert not fused_kernels_enabled()


@pytest.mark.parametrize("value, enabled", [("1", True), ("true", True), (" On", True), ("yes", True), ("0", False),
                                            ("", False), ("off", False), ("no", False)])
def test_the_environment_variable_turns_the_kernels_on_or_off(value, enabled, fused_calls, monkeypatch):
    monkeypatch.setenv(fused.ENVIRONMENT_VARIABLE, value)
    assert fused_kernels_enabled() is enabled
    with fused_kernels(not enabled):  # the block's setting wins, and ends with the block
        assert fused_kernels_enabled() is not enabled
    assert fused_kernels_enabled() is enabled


def test_a_misspelt_environment_variable_is_one_clear_error(fused_calls, monkeypatch):
    monkeypatch.setenv(fused.ENVIRONMENT_VARIABLE, "fused")
    with pytest.raises(ValueError, match=r"TORCHZEBRA_FUSED_KERNELS='fused' is invalid: set it to 1 .* or 0"):
        fused_kernels_enabled()


def assert_same_step_through_the_kernels(model: nn.Module, x: torch.Tensor, count: bool = False):
    """A training step of two copies of ``model``, the kernels off then on (and with ``count`` a ``tz.measure``):
    outputs, losses, gradients (and counted rows) agree; the two outputs, with the kernels and without."""
    results = []
    for enabled in (False, True):
        twin = copy.deepcopy(model)
        with fused_kernels(enabled):
            out = twin(x)
            loss = out.square().mean() + 0.1 * tz.zero_block_loss(twin)
            loss.backward()
            rows = tz.measure(twin, [x]).layers if count else None
        results.append((out.detach(), loss.detach(), [p.grad for p in twin.parameters()], rows))
    (want, want_loss, want_grads, want_rows), (got, got_loss, got_grads, got_rows) = results
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_loss, want_loss)
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got, g_want)
    assert got_rows == want_rows
    return got, want


def test_a_prepared_model_trains_and_counts_the_same_through_the_kernels(residual_net, kernels_on):
    config = tz.ZebraConfig(block_size=2, threshold=0.2, penalty="group_lasso")
    model = tz.prepare(residual_net.to(DEVICE).train(), config)
    assert_same_step_through_the_kernels(model, torch.randn(3, 1, 8, 8, device=DEVICE), count=True)
    assert len(kernels_on) == 4  # two layers, in training and in counting; none while the kernels were off


def test_an_nhwc_site_takes_the_kernels_in_its_own_layout(kernels_on):
    """ConvNeXt's pattern (Linear over channels on an N, H, W, C map): the layer hands the kernels a channels_last
    view, and outputs, the penalty and gradients are those of the reference path."""
    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 6)

        def forward(self, x):
            return F.relu(self.fc(self.conv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)

    model = tz.prepare(ChannelsLast().to(DEVICE).train(), tz.ZebraConfig(block_size=2, threshold=0.2, penalty="l1"))
    assert [layer.layout for _, layer in tz.zebra_layers(model)] == ["NHWC"]
    got, want = assert_same_step_through_the_kernels(model, torch.randn(2, 3, 8, 10, device=DEVICE))
    # one call, on a channels-first view of the N, H, W, C map, only while the kernels were on
    calls = [(tuple(m.shape), m.is_contiguous(memory_format=torch.channels_last)) for m in kernels_on]
    assert calls == [((2, 6, 8, 10), True)]
    assert torch.equal(got == 0, want == 0) and (got == 0).any() and (got != 0).any()


@pytest.mark.slow  # 120 compiles through ptxas
@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None,
                    reason="Triton's NVIDIA backend is not installed")
def test_the_kernels_compile_for_an_h100():
    """What the interpreter cannot show: the kernels compile for sm_90 (through ptxas) as typical maps would launch
    them, GPU or not."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_kernels.py")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("compiled") == 120  # 3 dtypes x 5 maps x 4 option sets, forward and backward


def test_a_calibration_pass_takes_the_reference_path(residual_net, kernels_on):
    """Calibration sets thresholds from the scores' quantile, which the kernels do not compute."""
    model = tz.prepare(residual_net.to(DEVICE).eval())
    for _, layer in tz.zebra_layers(model):
        layer.calibration_density = 0.5
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8, device=DEVICE))
    assert kernels_on == [] and all(layer.threshold > 0 for _, layer in tz.zebra_layers(model))
