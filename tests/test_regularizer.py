"""The zero-block regulariser: differentiable, normalised per layer, and it drives blocks to exact zero."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import torchzebra as tz
from torchzebra.core import apply_block_mask, block_keep, block_penalty, cpu_kernel, nonzero_blocks
from torchzebra.nn import ZebraLayer
from torchzebra.nn.activations import NONNEGATIVE_FUNCTIONS, NONNEGATIVE_MODULES


@pytest.mark.parametrize("kind", ["group_lasso", "l1", "l2"])
def test_penalty_is_normalised_across_layer_and_batch_size(kind):
    x = torch.rand(2, 3, 8, 8)
    value = block_penalty(x, 4, kind)
    assert torch.allclose(block_penalty(torch.cat([x, x], 1), 4, kind), value)  # twice the channels
    assert torch.allclose(block_penalty(torch.cat([x, x], 0), 4, kind), value)  # twice the batch
    tiled = torch.cat([torch.cat([x, x], 2), torch.cat([x, x], 2)], 3)  # twice the height and width
    assert torch.allclose(block_penalty(tiled, 4, kind), value)


class _Operations(TorchDispatchMode):
    """The names of the aten operations that run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype,layout", [(torch.float32, torch.contiguous_format),
                                          (torch.bfloat16, torch.channels_last)])
def test_the_l1_penalty_of_a_relu_map_reuses_the_masks_block_sums_with_the_same_gradient(dtype, layout, monkeypatch):
    monkeypatch.setattr(cpu_kernel, "usable", lambda *args: False)  # the PyTorch path (the kernel shares them anyway)
    torch.manual_seed(0)
    x = torch.rand(4, 8, 8, 12).mul(2).to(dtype).contiguous(memory_format=layout).requires_grad_()
    weights = torch.randn(x.shape).to(dtype)
    layer = ZebraLayer("relu", block_size=2, score="mean", threshold=1.0, penalty="l1", nonnegative=True).train()
    operations = _Operations()
    with operations:
        out = layer(x)
    penalty = layer.last_penalty
    assert "aten.mean" not in operations.names  # no second pass over the map for the penalty
    ((out * weights).sum() + 0.37 * penalty).backward()
    plain = x.detach().clone().requires_grad_()
    want_out = apply_block_mask(plain, block_keep(plain, 2, "mean", 1.0, nonnegative=True), 2)
    want_penalty = plain.mean()
    ((want_out * weights).sum() + 0.37 * want_penalty).backward()
    assert torch.equal(out, want_out) and torch.equal(x.grad, plain.grad)  # the same step, bit for bit
    torch.testing.assert_close(penalty, want_penalty)  # the logged value, to its last bits


def test_group_lasso_value_by_hand_and_finite_gradient_at_zero():
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, :, :2] = 2.0  # block RMS 2, the other block 0
    x.requires_grad_(True)
    value = block_penalty(x, 2, "group_lasso")
    assert value.item() == pytest.approx(1.0)
    value.backward()
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[0, 0, :, 2:] == 0)


def test_loss_needs_a_training_forward(residual_net):
    prepared = tz.prepare(residual_net).eval()
    prepared(torch.randn(1, 1, 8, 8))
    with pytest.raises(RuntimeError, match="training mode"):
        tz.zero_block_loss(prepared)


@pytest.mark.parametrize("kind", ["group_lasso", "l1", "l2"])
def test_loss_weights_layers_and_skips_inactive(residual_net, kind):
    x = torch.randn(2, 1, 8, 8)
    full = tz.prepare(residual_net, tz.ZebraConfig(penalty=kind)).train()
    inputs = []  # each layer's unmasked activation, as it entered the layer
    for _, layer in tz.zebra_layers(full):
        layer.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach()))
    full(x)
    one = tz.prepare(residual_net, tz.ZebraConfig(penalty=kind, exclude=["relu:1"], weight={"relu": 3.0})).train()
    one(x)
    terms = [block_penalty(unmasked, 4, kind) for unmasked in inputs]
    torch.testing.assert_close(tz.zero_block_loss(full), terms[0] + terms[1])
    torch.testing.assert_close(tz.zero_block_loss(one), 3 * terms[0])


@pytest.mark.slow  # 150 optimiser steps
def test_minimising_the_penalty_alone_drives_blocks_to_exact_zero():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(8, 8, 3, padding=1), nn.SiLU())
    prepared = tz.prepare(model, tz.ZebraConfig(block_size=4, threshold=0.02)).train()
    x = torch.randn(8, 1, 16, 16)

    def zero_block_fraction():
        with torch.no_grad():
            return 1 - nonzero_blocks(prepared(x), 4).float().mean().item()

    assert zero_block_fraction() < 0.1
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    for _ in range(150):
        optimizer.zero_grad()
        prepared(x)
        tz.zero_block_loss(prepared).backward()
        optimizer.step()
    assert zero_block_fraction() > 0.95


def test_calibrate_reaches_target_block_density_per_layer(residual_net):
    prepared = tz.prepare(residual_net, tz.ZebraConfig(block_size=2, exclude=["relu:1"]))
    x = torch.randn(16, 1, 8, 8)
    thresholds = tz.calibrate(prepared, [x[:8], (x[8:], None)], density=0.3)
    assert list(thresholds) == ["relu"] and thresholds["relu"] > 0
    report = tz.measure(prepared, [x])
    assert report.layers[0].block_density == pytest.approx(0.3, abs=0.02)
    assert report.layers[1].block_density > 0.5  # excluded: not calibrated, not masked
    with pytest.raises(ValueError, match="density for relu=1.5 is invalid"):
        tz.calibrate(prepared, [x], density=1.5)


def _activation_name(activation) -> str:
    """A module's class or a function's qualified name: the same in every process, unlike its repr's address."""
    if isinstance(activation, torch.nn.Module):
        return type(activation).__name__
    return f"{activation.__module__}.{activation.__name__}"


@pytest.mark.parametrize("activation", sorted([*(cls() for cls in NONNEGATIVE_MODULES), *NONNEGATIVE_FUNCTIONS],
                                              key=_activation_name), ids=_activation_name)
@pytest.mark.parametrize("shape, block", [((2, 3, 8, 8), 2), ((2, 3, 7, 9), 4)])
def test_the_l1_penalty_of_a_nonnegative_map_skips_abs_with_the_same_parameter_gradients(activation, shape, block):
    """For every activation prepare marks non-negative, mean x in place of mean |x| changes the map's gradient at
    exact zeros only, where the activation's own backward discards it."""
    pre = torch.randn(shape, dtype=torch.float64) * 4
    pre[0, 0] = 0  # exact zeros at the kink (and values past ReLU6's top)
    results = []
    for nonnegative in (False, True):
        scale = torch.ones(1, shape[1], 1, 1, dtype=torch.float64, requires_grad=True)
        x = activation(pre * scale)
        value = block_penalty(x, block, "l1", nonnegative)
        value.backward()
        results.append((value.detach(), scale.grad))
    (want, want_grad), (got, got_grad) = results
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad) and want_grad.abs().sum() > 0
