"""prepare/remove on torchvision and own models: call sites, exactness, gradients, per-layer config."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import torchzebra as tz
from torchzebra.models import ResNet18

TORCHVISION = {
    # name: (call sites, input size)
    "resnet18": (17, 32),  # stem + 2 per BasicBlock, one shared nn.ReLU per block
    "resnet50": (49, 32),  # stem + 3 per Bottleneck, one shared nn.ReLU per block
    "vgg11_bn": (10, 32),  # 8 conv ReLUs + 2 classifier ReLUs (not maps: passed through, not measured)
    "mobilenet_v2": (35, 32),  # ReLU6
}


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_models_instrumented_and_exact(name):
    sites, size = TORCHVISION[name]
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    x = torch.randn(2, 3, size, size)
    expected = model(x)
    prepared = tz.prepare(model, tz.ZebraConfig(block_size=4, threshold=0.0))
    names = [n for n, _ in tz.zebra_layers(prepared)]
    assert len(names) == sites == len(set(names))
    assert torch.equal(prepared(x), expected)
    report = tz.measure(prepared, [x])
    assert 0 < len(report.layers) <= sites
    assert tz.remove(prepared) is model


def test_shared_relu_gets_one_layer_per_call_site():
    model = torchvision.models.resnet18().eval()
    prepared = tz.prepare(model, tz.ZebraConfig(threshold={"layer1.0.relu:1": 0.5}))
    layers = dict(tz.zebra_layers(prepared))
    first, second = layers["layer1.0.relu"], layers["layer1.0.relu:1"]
    assert first is not second
    assert first.threshold.item() == 0.0 and second.threshold.item() == 0.5
    report = tz.measure(prepared, [torch.randn(2, 3, 32, 32)])
    rows = {row.name: row for row in report.layers}
    assert rows["layer1.0.relu"].block_density > rows["layer1.0.relu:1"].block_density
    # the second call's output feeds the next block's conv and its identity shortcut
    assert second.consumers == 2 and first.consumers == 1


class FunctionalActivations(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2, 2, 3, padding=1) for _ in range(8))
        self.relu6, self.leaky, self.silu, self.hswish = nn.ReLU6(), nn.LeakyReLU(0.1), nn.SiLU(), nn.Hardswish()

    def forward(self, x):
        c = self.convs
        x = F.relu(c[0](x))
        x = torch.relu(c[1](x))
        x = c[2](x).relu()
        x = self.relu6(c[3](x))
        x = self.leaky(c[4](x))
        x = self.silu(c[5](x))
        x = self.hswish(c[6](x))
        return F.silu(c[7](x))


def test_functional_and_other_activations_are_found():
    model = FunctionalActivations().eval()
    prepared = tz.prepare(model)
    assert [n for n, _ in tz.zebra_layers(prepared)] == [
        "relu", "relu:1", "relu:2", "relu6", "leaky", "silu", "hswish", "silu:1"
    ]
    nonnegative = [layer.nonnegative for _, layer in tz.zebra_layers(prepared)]
    assert nonnegative == [True, True, True, True, False, False, False, False]
    x = torch.randn(2, 2, 9, 9)
    assert torch.equal(prepared(x), model(x))


def test_own_resnet_names_functional_sites_by_enclosing_module():
    prepared = tz.prepare(ResNet18(num_classes=10, in_channels=1, width=4))
    names = [n for n, _ in tz.zebra_layers(prepared)]
    assert names[:3] == ["stem.2", "layer1.0.relu", "layer1.0.relu:1"]
    assert len(names) == 17


def test_model_without_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="Sequential has no activation to instrument"):
        tz.prepare(nn.Sequential(nn.Conv2d(1, 1, 3)))


def test_untraceable_model_is_a_clear_error():
    class Dynamic(nn.Module):
        def forward(self, x):
            return F.relu(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="tracing failed in its forward.*leaf_modules"):
        tz.prepare(Dynamic())


def test_a_trace_failure_names_the_submodule_and_the_leaf_module_that_gets_past_it():
    class Dynamic(nn.Module):
        def forward(self, x):
            return F.relu(x) if x.sum() > 0 else x

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(2, 2, 1), Dynamic()))
    with pytest.raises(ValueError,
                       match=r"tracing failed inside 2\.1 \(Dynamic\).*ZebraConfig\(leaf_modules=\['2\.1'\]\)"):
        tz.prepare(model)
    prepared = tz.prepare(model, tz.ZebraConfig(leaf_modules=["2.1"]))  # its functional relu is not seen
    assert [site for site, _ in tz.zebra_layers(prepared)] == ["1"]


def test_preparing_twice_and_removing_plain_model_are_errors(residual_net):
    prepared = tz.prepare(residual_net)
    with pytest.raises(ValueError, match="already prepared"):
        tz.prepare(prepared)
    with pytest.raises(ValueError, match="not prepared"):
        tz.remove(residual_net)


@pytest.mark.parametrize("call, name", [
    (tz.zero_block_loss, "zero_block_loss"), (tz.zebra_layers, "zebra_layers"), (tz.remove, "remove"),
    (lambda m: tz.set_masking(m, False), "zebra_layers"), (lambda m: tz.measure(m, [torch.zeros(1, 1, 8, 8)]),
                                                           "measure"),
    (lambda m: tz.calibrate(m, [torch.zeros(1, 1, 8, 8)], 0.5), "calibrate"),
])
def test_every_function_of_a_prepared_model_refuses_a_plain_one(residual_net, call, name):
    with pytest.raises(ValueError,
                       match=rf"{name}\(\) takes a model returned by torchzebra.prepare\(\) .*; this one is not"):
        call(residual_net)


def test_prepared_state_and_plain_model(residual_net):
    config = tz.ZebraConfig(penalty="l1")
    prepared = tz.prepare(residual_net, config)
    state = tz.nn.prepared_state(prepared)
    assert state.original is residual_net and state.config is config
    assert tz.plain_model(prepared) is residual_net and tz.plain_model(residual_net) is residual_net


def test_eval_mode_gives_every_submodule_its_own_mode_back():
    model = torchvision.models.resnet18(num_classes=3).train()
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:3]
    for module in frozen:
        module.eval()
    with tz.eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and not any(m.training for m in frozen)
    prepared = tz.prepare(model)
    tz.measure(prepared, [torch.randn(2, 3, 32, 32)])  # measures in eval mode, then restores each module's mode
    assert prepared.training and [m.training for m in frozen] == [False] * 3 and model.layer4[1].bn2.training


def test_masking_off_gives_original_outputs_at_any_threshold(residual_net):
    x = torch.randn(3, 1, 8, 8)
    prepared = tz.prepare(residual_net, tz.ZebraConfig(threshold=10.0))
    assert not torch.equal(prepared(x), residual_net(x))
    tz.set_masking(prepared, False)
    assert torch.equal(prepared(x), residual_net(x))


def test_remove_restores_structure_and_keeps_trained_weights(residual_net):
    structure = str(residual_net)
    prepared = tz.prepare(residual_net, tz.ZebraConfig(threshold=0.01)).train()
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    loss = prepared(torch.randn(4, 1, 8, 8)).sum() + tz.zero_block_loss(prepared)
    loss.backward()
    optimizer.step()
    plain = tz.remove(prepared)
    assert plain is residual_net and str(plain) == structure and plain.training
    for (name, value), (_, trained) in zip(plain.state_dict().items(), prepared.state_dict().items()):
        assert torch.equal(value, trained), name


def test_gradients_flow_through_kept_blocks_only():
    layer = tz.ZebraLayer("site", block_size=2, threshold=0.5)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, :2, :2] = 1.0  # kept block
    x[0, 0, 2:, 2:] = 0.2  # pruned block
    x.requires_grad_(True)
    layer(x).sum().backward()
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, :2, :2] = 1.0
    expected[0, 0, :2, 2:] = 0.0  # a zero block: score 0 <= 0.5, pruned
    assert torch.equal(x.grad, expected)


def test_per_layer_block_size_and_enable_by_pattern(residual_net):
    config = tz.ZebraConfig(block_size={"relu:1": "map", "*": 2}, threshold=0.3, exclude=["relu:1"])
    prepared = tz.prepare(residual_net, config)
    first, second = (layer for _, layer in tz.zebra_layers(prepared))
    assert (first.block_size, second.block_size) == (2, "map")
    assert first.active and not second.active
    report = tz.measure(prepared, [torch.randn(2, 1, 8, 8)])
    assert [row.block_size for row in report.layers] == [2, "map"]  # inactive sites are still measured


def test_state_dict_round_trip_and_deepcopy_keep_thresholds(residual_net):
    prepared = tz.prepare(residual_net, tz.ZebraConfig(threshold=0.25))
    state = prepared.state_dict()
    assert "zebra.relu.threshold" in state
    other = tz.prepare(copy.deepcopy(residual_net))
    other.load_state_dict(state)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(other(x), prepared(x))
    clone = copy.deepcopy(prepared)
    assert tz.is_prepared(clone) and torch.equal(clone(x), prepared(x))
    assert tz.remove(clone) is not residual_net


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"block_size": 0}, "block_size=0 is invalid"),
        ({"block_size": -4}, "block_size=-4 is invalid"),
        ({"block_size": {"layer1.*": 0}}, r"block_size\['layer1.\*'\]=0 is invalid"),
        ({"score": "median"}, "score='median' is invalid: use one of mean, max, rms"),
        ({"threshold": float("nan")}, "threshold=nan is invalid: use a finite number >= 0"),
        ({"threshold": -0.1}, "threshold=-0.1 is invalid"),
        ({"penalty": "l0"}, "penalty='l0' is invalid: use one of group_lasso, l1, l2"),
        ({"weight": float("inf")}, "weight=inf is invalid"),
        ({"include": 3}, "include=3 is invalid"),
    ],
)
def test_bad_config_values_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tz.ZebraConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys():
    assert tz.ZebraConfig.from_dict({"block_size": 8}).block_size == 8
    with pytest.raises(ValueError, match=r"unknown Zebra setting\(s\) \['blocksize'\]"):
        tz.ZebraConfig.from_dict({"blocksize": 8})
    config = tz.ZebraConfig(block_size={"a*": 2})
    assert tz.ZebraConfig.from_dict(config.to_dict()) == config
