"""timm's CNNs, unmodified (random weights, nothing downloaded): prepare in both modes, exact outputs, a
training step, save/load round trips, and every activation call on a 4-D map instrumented."""

import copy
import io
import json
import warnings

import pytest
import torch
import torch.nn.functional as F

import torchzebra as tz
from torchzebra.nn import ActivationCalls

timm = pytest.importorskip("timm")

# 25 families: ResNet (also -D, SE-ResNeXt), RegNet, EfficientNet (also TF-Lite, MobileNet-V2), MobileNet-V3, DenseNet,
# CSPNet, GhostNet, ConvNeXt V1/V2, ResNeSt, DLA, HRNet, RepVGG, Res2Net, SelecSLS, EfficientViT, VGG, ReXNet,
# VoVNet, SKNet, NF-ResNet, ResNetV2, DPN, Xception, RepGhost, HGNetV2
MODELS = [
    "resnet18", "resnet50d", "seresnext26d_32x4d", "regnety_002", "efficientnet_b0", "tf_efficientnet_lite0",
    "mobilenetv3_small_050", "densenet121", "cspresnet50", "ghostnet_100", "convnext_atto", "convnextv2_atto",
    "resnest14d", "dla34", "hrnet_w18_small", "repvgg_a0", "res2net50_14w_8s", "selecsls42b", "efficientvit_b0",
    "mobilenetv2_050", "vgg11_bn", "rexnet_100", "ese_vovnet19b_slim_dw", "skresnet18", "nf_resnet26", "resnetv2_50",
    "dpn48b", "xception41", "repghostnet_050", "hgnetv2_b0",
]
# modules timm registers as not traceable: their activations are not ours
KEPT_WHOLE = {"efficientvit_b0": "LiteMLA", "vgg11_bn": "ConvMlp"}
CONFIG = tz.ZebraConfig(block_size=2, score="mean", threshold=0.05)


def _prepared(model: torch.nn.Module, config: tz.ZebraConfig = CONFIG) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning about uncounted sites is checked through the coverage
        return tz.prepare(model, config)


def _plain_run(model: torch.nn.Module, x: torch.Tensor, kept_whole: str | None) -> tuple[torch.Tensor, int]:
    """The plain model's outputs and its activation calls on 4-D maps, less those inside modules kept whole."""
    inputs = {}
    hooks = [module.register_forward_pre_hook(lambda module, args: inputs.setdefault(module, args))
             for module in model.modules() if type(module).__name__ == kept_whole]
    with ActivationCalls() as everywhere:
        outputs = model(x)
    for hook in hooks:
        hook.remove()
    with ActivationCalls() as inside:
        for module, args in inputs.items():
            module(*args)
    return outputs, everywhere.calls - inside.calls


def _roundtrip(model: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _exact_at_threshold_zero(prepared: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The prepared model's outputs with every threshold at 0 (thresholds restored after)."""
    thresholds = [layer.threshold.clone() for _, layer in tz.zebra_layers(prepared)]
    for _, layer in tz.zebra_layers(prepared):
        layer.threshold.zero_()
    outputs = prepared(x)
    for (_, layer), threshold in zip(tz.zebra_layers(prepared), thresholds):
        layer.threshold.copy_(threshold)
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_timm_cnn_is_instrumented_whole_and_exact(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain, calls = _plain_run(model, x, KEPT_WHOLE.get(name))
        prepared = _prepared(model)
        assert torch.equal(_exact_at_threshold_zero(prepared, x), plain)
        outputs = prepared(x)
        assert torch.equal(prepared(x), outputs)
        assert torch.allclose(prepared(x[1:]), outputs[1:], rtol=1e-4, atol=1e-4)  # one image as in the batch
        report = tz.measure(prepared, [x])
    assert not report.skipped and len(report.layers) == calls > 0
    assert report.complete == (name not in KEPT_WHOLE)
    loaded, copied = _roundtrip(prepared), copy.deepcopy(prepared)
    for layer in tz.zebra_layers(copied):
        layer[1].threshold.fill_(1.0)
    copied.load_state_dict(prepared.state_dict())
    for other in (loaded, copied):
        assert tz.is_prepared(other) and torch.equal(other(x), outputs)

    prepared.train()
    loss = F.cross_entropy(prepared(x), torch.tensor([1, 2])) + 0.01 * tz.zero_block_loss(prepared)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [
    ("efficientnet_b0", {"drop_rate": 0.2, "drop_path_rate": 0.2}),  # dropout, DropPath, BatchNormAct2d
    ("ghostnet_100", {"drop_rate": 0.2}),  # a functional dropout in the top-level forward
    ("convnext_atto", {"drop_path_rate": 0.2}),
])
def test_timm_cnn_prepared_in_train_mode_keeps_its_stochastic_layers(name, options):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, **options).train()
    prepared = _prepared(model)
    assert prepared.training and all(m.training for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    tz.set_masking(prepared, False)
    torch.manual_seed(1)
    expected = model(x)
    torch.manual_seed(1)
    assert torch.equal(prepared(x), expected)  # the same dropout and drop-path draws, batch statistics
    torch.manual_seed(2)
    assert not torch.equal(prepared(x), expected)  # they are drawn at run time
    tz.set_masking(prepared, True)
    loss = F.cross_entropy(prepared(x), torch.tensor([0, 1])) + 0.01 * tz.zero_block_loss(prepared)
    loss.backward()
    prepared.eval()
    with torch.no_grad():
        assert torch.equal(prepared(x), prepared(x))
        tz.set_masking(prepared, False)
        assert torch.equal(prepared(x), model.eval()(x))


def test_training_flags_set_by_hand_pick_the_graph_of_their_mode():
    """A freeze loop sets ``training`` on each submodule, not through ``.train()``/``.eval()``: the prepared model
    (a ModeGraphModule, for timm's BatchNormAct2d) runs the graph of the flag it finds at the call."""
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", num_classes=10).train()
    assert any(type(module).__name__ == "BatchNormAct2d" for module in model.modules())
    prepared = _prepared(model)
    assert isinstance(prepared, tz.nn.ModeGraphModule) and prepared.training
    tz.set_masking(prepared, False)  # random weights: the thresholds would zero the outputs in either mode
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = prepared.eval()(x)  # the eval graph: running statistics
        assert torch.equal(expected, model.eval()(x))  # the plain model in eval mode
        prepared.train()
        for module in prepared.modules():
            module.training = False
        assert prepared.graph is prepared.mode_graphs[False] and torch.equal(prepared(x), expected)
        for module in prepared.modules():
            module.training = True
        assert prepared.graph is prepared.mode_graphs[True] and not torch.allclose(prepared(x), expected)


@pytest.mark.parametrize("name, channels", [("timm:resnet18", 1), ("timm:mobilenetv3_small_050", 3)])
def test_the_model_zoo_builds_timm_cnns_with_random_weights(name, channels):
    from torchzebra.models import build_model

    model = build_model(name, 7, channels).eval()
    assert model(torch.randn(2, channels, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="'timm:nonsense' is unknown to timm"):
        build_model("timm:nonsense", 7, channels)


@pytest.mark.slow
def test_a_timm_cnn_trains_with_zebra_from_the_cli_and_its_checkpoint_evaluates(tmp_path, capsys):
    from torchzebra.cli import main

    settings = ["model.name=timm:mobilenetv3_small_050", "data.name=synthetic", "data.channels=1",
                "data.length=256", "data.train_subset=128", "data.test_subset=64", "data.batch_size=32",
                "data.workers=0", "train.epochs=1", "device=cpu", "zebra.enabled=true", "zebra.lam=0.01"]
    args = [arg for setting in settings for arg in ("--set", setting)] + ["--quiet"]
    run_dir = tmp_path / "run"
    assert main(["train", "--preset", "quick", *args, "--run-dir", str(run_dir)]) == 0
    assert main(["eval", str(run_dir / "last.pt"), "--json", str(tmp_path / "traffic.json")]) == 0
    report = tz.TrafficReport.from_dict(json.loads((tmp_path / "traffic.json").read_text()))
    assert report.complete and report.coverage == 1.0 and len(report.layers) > 20
