"""prepare on real torchvision CNNs and with every PyTorch tool: modes, layouts, pickling, compile, exports."""

import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import torchzebra as tz


@pytest.fixture(scope="module", params=["efficientnet_b0", "convnext_tiny"])
def torchvision_model(request):
    """A torchvision CNN built in train mode, as users build them (stochastic depth on), at small input."""
    torch.manual_seed(0)
    return getattr(torchvision.models, request.param)(num_classes=10, stochastic_depth_prob=0.5)


@pytest.mark.parametrize("prepare_in_train", [True, False])
def test_train_and_eval_behave_as_in_the_original_whatever_the_mode_at_prepare(torchvision_model, prepare_in_train):
    model = copy.deepcopy(torchvision_model).train(prepare_in_train)
    prepared = tz.prepare(model, tz.ZebraConfig(block_size=2, threshold=0.0))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        prepared.eval()
        assert torch.equal(prepared(x), prepared(x)) and torch.equal(prepared(x), tz.remove(prepared).eval()(x))
        prepared.train()
        torch.manual_seed(1)
        ours = prepared(x)
        torch.manual_seed(1)
        theirs = tz.remove(prepared).train()(x)
        torch.manual_seed(2)
        assert torch.equal(ours, theirs) and not torch.equal(ours, prepared.train()(x))  # stochastic depth is on


def test_channels_last_activations_are_tiled_per_channel():
    class ChannelsLast(nn.Module):  # ConvNeXt's pattern: permute, Linear over channels, GELU, permute back
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Linear(6, 6)

        def forward(self, x):
            return F.gelu(self.fc(self.conv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)

    class SameInNCHW(ChannelsLast):
        def forward(self, x):
            return F.gelu(self.fc(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2))

    config = tz.ZebraConfig(block_size=2, threshold=0.3)
    ours, reference = tz.prepare(ChannelsLast().eval(), config), tz.prepare(SameInNCHW().eval(), config)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 8, 10)
    assert [layer.layout for _, layer in tz.zebra_layers(ours)] == ["NHWC"]
    assert torch.equal(ours(x) == 0, reference(x) == 0)  # the same blocks zeroed
    torch.testing.assert_close(ours(x), reference(x))  # GELU's kernels on the two layouts differ in the last bit
    report = tz.measure(ours, [x])
    assert report.layers[0].shape == (6, 8, 10) and report.layers[0].bytes == tz.measure(reference, [x]).layers[0].bytes


def test_convnext_maps_are_counted_channels_first(torchvision_model):
    prepared = tz.prepare(copy.deepcopy(torchvision_model).eval(), tz.ZebraConfig(block_size=2))
    report = tz.measure(prepared, [torch.randn(1, 3, 32, 32)])
    if isinstance(torchvision_model, torchvision.models.ConvNeXt):
        assert {layer.layout for _, layer in tz.zebra_layers(prepared)} == {"NHWC"}
        assert report.layers[0].shape == (384, 8, 8)  # 4 x 96 channels on the 8x8 map of a 32x32 input


def test_an_input_of_unknown_dim_order_is_left_unmasked_and_listed():
    class Reshaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return torch.relu(y.reshape(y.shape[0], 2, 2, -1))

    with pytest.warns(UserWarning, match="left unmasked and not counted: relu: the dim order"):
        prepared = tz.prepare(Reshaped().eval(), tz.ZebraConfig(block_size=2, threshold=100.0))
    (site, layer), = tz.zebra_layers(prepared)
    x = torch.randn(2, 1, 8, 8)
    assert layer.skipped and torch.equal(prepared(x), tz.remove(prepared)(x))
    report = tz.measure(prepared, [x])
    assert report.layers == [] and site in report.skipped and "skipped" in str(report)
    assert report.coverage == 0.0 and not report.complete and "covers 0.0%" in str(report)


def test_prepare_and_remove_leave_every_module_mode_as_found():
    model = torchvision.models.resnet18(num_classes=10).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()  # frozen statistics
    prepared = tz.prepare(model)
    frozen = [m for m in prepared.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(frozen) == 20 and not any(m.training for m in frozen) and prepared.training
    assert not any(m.training for m in tz.remove(prepared).modules() if isinstance(m, nn.BatchNorm2d))


class Branchy(nn.Module):
    """Other operations in train and eval mode around the same activation, as timm's BatchNormAct2d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.bn(x) * 2 if self.training else F.dropout(x, 0.5, self.training)


def test_a_model_whose_graph_differs_between_modes_runs_the_graph_of_its_mode():
    model = Branchy().train()
    prepared = tz.prepare(model, tz.ZebraConfig(block_size=2, threshold=0.0))
    assert isinstance(prepared, tz.nn.ModeGraphModule) and len(tz.zebra_layers(prepared)) == 1
    x = torch.randn(2, 1, 6, 6)
    torch.manual_seed(1)
    expected = model(x)
    torch.manual_seed(1)
    assert torch.equal(prepared(x), expected)  # train: the batch-norm branch, statistics updated
    prepared.eval()
    assert torch.equal(prepared(x), model.eval()(x))
    with tz.nn.training_mode(prepared, True):
        assert prepared(x).shape == expected.shape and not torch.equal(prepared(x), model.eval()(x))
    assert torch.equal(prepared(x), model(x))  # the eval graph again once the mode is restored
    for loaded in (pickle.loads(pickle.dumps(prepared)), copy.deepcopy(prepared)):
        assert isinstance(loaded, tz.nn.ModeGraphModule) and not loaded.training
        assert torch.equal(loaded(x), prepared(x)) and torch.equal(loaded.train()(x), prepared.train()(x))
        prepared.eval()


def test_a_model_that_calls_other_activations_in_train_and_eval_mode_is_refused():
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            x = self.conv(x)
            return torch.relu(x) if self.training else x

    with pytest.raises(ValueError, match="other activations in train and eval mode.*relu"):
        tz.prepare(Other())


@pytest.mark.parametrize("roundtrip", [
    lambda m: pickle.loads(pickle.dumps(m)),
    lambda m: pickle.loads(pickle.dumps(copy.deepcopy(m))),
    lambda m: torch.load(_saved(m), weights_only=False),
])
def test_a_whole_prepared_model_survives_pickle_and_torch_save(residual_net, roundtrip):
    prepared = tz.prepare(residual_net, tz.ZebraConfig(block_size=2, threshold=0.2))
    x = torch.randn(2, 1, 8, 8)
    loaded = roundtrip(prepared)
    assert tz.is_prepared(loaded) and torch.equal(loaded(x), prepared(x))
    assert [s for s, _ in tz.zebra_layers(loaded)] == [s for s, _ in tz.zebra_layers(prepared)]
    plain = tz.remove(loaded)
    assert not tz.is_prepared(plain) and torch.equal(plain.conv1.weight, residual_net.conv1.weight)


def _saved(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return buffer


def test_every_public_function_accepts_a_compiled_prepared_model(residual_net):
    prepared = tz.prepare(residual_net.train(), tz.ZebraConfig(block_size=2))
    compiled = torch.compile(prepared, backend="eager")  # the wrapper is what matters here, not the backend
    x = torch.randn(4, 1, 8, 8)
    compiled(x)
    assert tz.is_prepared(compiled) and len(tz.zebra_layers(compiled)) == 2
    assert tz.zero_block_loss(compiled).item() > 0
    assert set(tz.calibrate(compiled, [x], 0.5)) == {"relu", "relu:1"}
    assert tz.measure(compiled, [x]).images == 4
    tz.set_masking(compiled, False)
    assert tz.remove(compiled) is residual_net


def test_jit_script_is_refused_with_what_works(residual_net):
    with pytest.raises(RuntimeError, match="torch.jit.trace"):
        torch.jit.script(tz.prepare(residual_net))


def test_in_place_activations_read_twice_give_the_same_outputs_with_and_without_grad():
    class ReadTwice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            h = self.conv(x)
            return torch.relu_(h) + h

    prepared = tz.prepare(ReadTwice().eval(), tz.ZebraConfig(block_size=2, threshold=0.3))
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        without = prepared(x)
    assert torch.equal(without, prepared(x))


@pytest.mark.parametrize("call", [lambda m: tz.measure(m, []), lambda m: tz.calibrate(m, [], 0.5)])
def test_empty_data_is_a_clear_error(residual_net, call):
    with pytest.raises(ValueError, match="got no batches"):
        call(tz.prepare(residual_net))


class LayerScale(nn.Module):
    """conv -> * gamma.reshape(1, -1, 1, 1) -> relu -> conv -> relu: a layer scale keeps the map's dim order."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.full((4,), 0.5))

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x) * self.gamma.reshape(1, -1, 1, 1))))


class ConvNeXtV2Block(nn.Module):
    """timm's ConvNeXt V2 block: depthwise conv, channels-last MLP with GRN, permute back, layer scale, residual."""

    def __init__(self, channels=1):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(channels), nn.Linear(channels, 8), nn.Linear(8, channels)
        self.grn_weight, self.grn_bias = nn.Parameter(torch.ones(8)), nn.Parameter(torch.zeros(8))
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        y = F.gelu(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1))))
        g = y.norm(p=2, dim=(1, 2), keepdim=True)
        y = y + torch.addcmul(self.grn_bias.view(1, 1, 1, -1), self.grn_weight.view(1, 1, 1, -1),
                              y * g / (g.mean(-1, keepdim=True) + 1e-6))
        y = self.fc2(y).permute(0, 3, 1, 2)
        return torch.relu(x + y.mul(self.gamma.reshape(1, -1, 1, 1)))


class SplitAttention(nn.Module):
    """ResNeSt's split attention: a 5-D reshape over the radix, summed back, then a conv and its relu."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc, self.out = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(2, 4, 1), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        b, rc, h, w = x.shape
        split = x.reshape((b, 2, rc // 2, h, w))
        attention = torch.relu(self.fc(split.sum(dim=1).mean((2, 3), keepdim=True))).reshape((b, 2, rc // 2, 1, 1))
        return torch.relu(self.out((split * attention.softmax(1)).sum(dim=1)))


class Classifier(nn.Module):
    """A conv, then a flattened classifier with its own relu: that relu's input is not a map."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1)))


@pytest.mark.parametrize("model, layouts", [
    (LayerScale(), ["NCHW", "NCHW"]),
    (ConvNeXtV2Block(), ["NHWC", "NCHW"]),
    (SplitAttention(), ["NCHW", "NCHW", "NCHW"]),
    (Classifier(), ["NCHW", "NCHW"]),
])
def test_the_dim_order_recovers_after_layer_scales_grn_split_attention_and_flatten(model, layouts):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no site left uncounted: no warning
        prepared = tz.prepare(model.eval(), tz.ZebraConfig(block_size=2, threshold=0.0))
    assert [layer.layout for _, layer in tz.zebra_layers(prepared)] == layouts
    assert not any(layer.skipped for _, layer in tz.zebra_layers(prepared))
    x = torch.randn(2, 1, 6, 6)
    report = tz.measure(prepared, [x])
    maps = len(layouts) - isinstance(model, Classifier)  # the classifier's relu sees a (N, 3) vector
    assert len(report.layers) == maps and report.complete and report.coverage == 1.0
    assert torch.equal(prepared(x), model(x))


def test_a_module_kept_whole_with_activations_inside_is_named_in_a_warning_and_in_the_coverage():
    model = LayerScale().eval()
    with pytest.warns(UserWarning, match=r"activations inside conv2 \(Sequential\): it is kept whole"):
        model.conv2 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        prepared = tz.prepare(model, tz.ZebraConfig(leaf_modules=["conv2"]))
    report = tz.measure(prepared, [torch.randn(2, 1, 6, 6)])
    assert not report.complete and 0 < report.coverage < 1 and "covers" in str(report)


def test_an_activation_right_after_another_keeps_the_dim_order():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.ReLU6(), nn.Conv2d(2, 2, 1), nn.ReLU()).eval()
    prepared = tz.prepare(model, tz.ZebraConfig(block_size=2))
    assert [layer.layout for _, layer in tz.zebra_layers(prepared)] == ["NCHW"] * 3
