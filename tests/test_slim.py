"""Network Slimming: plans, physical removal equal to masking, floors, sparsity steps, checkpoints and flows."""

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import torchzebra as tz
from torchzebra import slim
from torchzebra.analysis.cost import model_cost
from torchzebra.cli import main
from torchzebra.models import build_model
from torchzebra.training import load_checkpoint, load_trained, train
from torchzebra.training.extensions import BnSparsity
from torchzebra.workflows.pruning import prune_checkpoint

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def trained_like(model: nn.Module) -> nn.Module:
    """Random BatchNorm scales, shifts and statistics, as a trained model has; eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.0, 1.0)
            module.bias.data.uniform_(-0.2, 0.2)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def bn(model: nn.Module, name: str) -> nn.BatchNorm2d:
    return dict(model.named_modules())[name]


def bn_channels(model: nn.Module) -> int:
    return sum(module.num_features for module in model.modules() if isinstance(module, nn.BatchNorm2d))


@pytest.mark.parametrize("name, options", [("resnet18", {"width": 8}), ("vgg11", {"width": 16}),
                                           ("torchvision:resnet18", {})])
def test_pruned_model_equals_the_masked_model(name, options):
    model = trained_like(build_model(name, 10, 3, **options))
    before = copy.deepcopy(model.state_dict())
    plan = slim.plan(model, 0.4)
    pruned = slim.prune(model, plan=plan)
    masked = slim.apply_mask(copy.deepcopy(model), plan)
    with torch.no_grad():
        assert torch.allclose(pruned(X), masked(X), atol=1e-5)
        assert not torch.allclose(model(X), masked(X), atol=1e-3)  # the plan did remove something that mattered
    assert slim.structure(pruned) == plan.kept_channels  # every BatchNorm has its planned width
    assert plan.pruned_fraction == pytest.approx(0.4, abs=0.01)
    big, small = model_cost(model, X), model_cost(pruned, X)
    assert small.params < 0.75 * big.params and small.macs < 0.75 * big.macs
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the input model is untouched


def test_residual_channels_shrink_together_and_go_only_when_unimportant_everywhere():
    model = trained_like(build_model("resnet18", 10, 3, width=8))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.fill_(1.0)
    for name in ("stem.1", "layer1.0.bn2"):  # small in two of the three coupled layers: must stay
        bn(model, name).weight.data[0] = 1e-3
    bn(model, "layer1.0.bn1").weight.data[2] = 1e-3  # small in a layer of its own: goes first
    plan = slim.plan(model, 1 / bn_channels(model))
    residual = next(g for g in plan.groups if "stem.1" in g.layers)
    assert residual.layers == ("stem.1", "layer1.0.bn2", "layer1.1.bn2")
    assert residual.removed == []
    assert next(g for g in plan.groups if g.layers == ("layer1.0.bn1",)).removed == [2]
    pruned = slim.prune(model, plan=plan)
    assert bn(pruned, "layer1.0.bn1").num_features == 7 and pruned.layer1[0].conv2.in_channels == 7


def test_lowest_scales_go_first_across_layers():
    model = trained_like(build_model("vgg11", 10, 3, width=16))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.0)
    bn(model, "features.1").weight.data[[1, 4]] = 0.01
    bn(model, "features.12").weight.data[[0, 7, 9]] = 0.02
    plan = slim.plan(model, 5 / bn_channels(model))
    removed = {g.layers[0]: g.removed for g in plan.groups if g.removed}
    assert removed == {"features.1": [1, 4], "features.12": [0, 7, 9]}
    assert plan.threshold == pytest.approx(0.02)


def test_per_layer_floor_keeps_the_best_channels():
    model = trained_like(build_model("resnet18", 10, 3, width=8))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.fill_(1.0)
    weak = bn(model, "layer3.0.bn1")
    weak.weight.data = torch.linspace(1e-4, 1e-3, weak.num_features)
    plan = slim.plan(model, weak.num_features / bn_channels(model), min_channels=3)
    group = next(g for g in plan.groups if g.layers == ("layer3.0.bn1",))
    assert group.floored and group.keep == tuple(range(weak.num_features - 3, weak.num_features))
    assert "(floor)" in str(plan)
    pruned = slim.prune(model, plan=plan)
    assert bn(pruned, "layer3.0.bn1").num_features == 3
    assert pruned(X).shape == (4, 10)


def test_excluded_layers_and_their_coupled_layers_stay_whole():
    model = trained_like(build_model("resnet18", 10, 3, width=8))
    plan = slim.plan(model, 0.3, exclude=["layer1.*"])
    kept = plan.kept_channels
    assert "stem.1" in plan.excluded and "layer1.0.bn1" in plan.excluded  # stem.1 shares layer1's stream
    assert "stem.1" not in kept and "layer1.0.bn1" not in kept
    pruned = slim.prune(model, plan=plan)
    assert bn(pruned, "stem.1").num_features == 8 and bn(pruned, "layer1.1.bn1").num_features == 8


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, True, "0.4", float("nan")])
def test_invalid_ratio_is_a_clear_error(ratio):
    with pytest.raises(ValueError, match="ratio=.* is invalid"):
        slim.plan(trained_like(build_model("vgg11", 10, 3, width=16)), ratio)


def test_a_ratio_that_would_empty_layers_is_refused():
    model = trained_like(build_model("resnet18", 10, 3, width=8))
    with pytest.raises(ValueError, match="would empty layers"):
        slim.plan(model, 0.99, min_channels=2)
    with pytest.raises(ValueError, match="min_channels=0 is invalid"):
        slim.plan(model, 0.5, min_channels=0)


def test_a_model_without_batchnorm_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match="no affine BatchNorm"):
        slim.plan(model, 0.4)
    with pytest.raises(ValueError, match="no trainable affine BatchNorm"):
        slim.bn_sparsity_step(model, 1e-4)


def test_a_plan_from_another_model_is_refused():
    plan = slim.plan(trained_like(build_model("vgg11", 10, 3, width=16)), 0.4)
    with pytest.raises(ValueError, match="does not fit this model"):
        slim.prune(build_model("vgg11", 10, 3, width=32), plan=plan)


def test_bn_sparsity_step_adds_the_l1_subgradient():
    model = trained_like(build_model("vgg11", 10, 3, width=16)).train()
    with pytest.raises(ValueError, match="after loss.backward"):
        slim.bn_sparsity_step(model, 1e-4)
    model(X).sum().backward()
    grads = {name: m.weight.grad.clone() for name, m in slim.batchnorms(model)}
    bn(model, "features.1").weight.data[0] = -0.5
    slim.bn_sparsity_step(model, 1e-2, exclude=["features.5"])
    for name, module in slim.batchnorms(model):
        expected = grads[name] if name == "features.5" else grads[name] + 1e-2 * module.weight.detach().sign()
        assert torch.allclose(module.weight.grad, expected), name
    assert bn(model, "features.1").weight.grad[0] == pytest.approx(grads["features.1"][0] - 1e-2)
    with pytest.raises(ValueError, match="s=-1 is invalid"):
        slim.bn_sparsity_step(model, -1)


def test_pruning_a_zebra_instrumented_model_keeps_it_instrumented():
    model = trained_like(build_model("resnet18", 10, 3, width=8))
    prepared = tz.prepare(model, tz.ZebraConfig(block_size=2, threshold=0.05)).eval()
    tz.zebra_layers(prepared)[3][1].threshold.fill_(0.2)
    plan = slim.plan(prepared, 0.4)
    pruned = slim.prune(prepared, plan=plan)
    assert tz.is_prepared(pruned)
    assert [site for site, _ in tz.zebra_layers(pruned)] == [site for site, _ in tz.zebra_layers(prepared)]
    assert tz.zebra_layers(pruned)[3][1].threshold.item() == pytest.approx(0.2)
    masked = slim.apply_mask(copy.deepcopy(prepared), plan)
    with torch.no_grad():
        assert torch.allclose(pruned(X), masked(X), atol=1e-5)
    assert slim.structure(prepared) == slim.structure(model) != slim.structure(pruned)  # input untouched
    report = tz.measure(pruned, [X])
    assert report.layers[1].shape[0] == bn(tz.remove(pruned), "layer1.0.bn1").num_features  # real, smaller maps


def test_restructure_rebuilds_a_pruned_model_from_its_channel_counts():
    model = trained_like(build_model("torchvision:resnet18", 10, 3))
    pruned = slim.prune(model, 0.5)
    fresh = slim.restructure(build_model("torchvision:resnet18", 10, 3), slim.structure(pruned))
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(X), pruned(X))
    counts = slim.structure(pruned)
    with pytest.raises(ValueError, match="other BatchNorm layers"):
        slim.restructure(build_model("torchvision:resnet18", 10, 3), {**counts, "extra.bn": 3})
    with pytest.raises(ValueError, match="coupled layers"):
        slim.restructure(build_model("torchvision:resnet18", 10, 3), {**counts, "layer1.0.bn2": 5})


def test_sparsity_training_shrinks_the_batchnorm_scales(tmp_path, tiny_run):
    config = tiny_run.config("train.schedule=constant")  # 4 steps at lr 0.1
    plain = train(config, tmp_path / "plain", progress=False)
    sparse = train(config, tmp_path / "sparse", extensions=[BnSparsity(0.5)], progress=False)  # ~0.6 per scale
    assert "bn_l1" not in plain.metrics[0]
    assert sparse.metrics[0]["bn_l1"] < 0.5 * slim.bn_l1(plain.model)
    assert load_checkpoint(tmp_path / "sparse" / "last.pt").extensions == {"bn_sparsity": {"s": 0.5}}


@pytest.mark.slow  # three training runs
def test_pruned_checkpoint_saves_loads_evaluates_and_fine_tunes(tmp_path, capsys, tiny_run):
    config = tiny_run.config()
    source = tmp_path / "sparse" / "last.pt"
    train(config, source.parent, extensions=[BnSparsity(1e-3)], progress=False)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    plan = prune_checkpoint(source, tmp_path / "pruned.pt", ["slim.ratio=0.5"])
    model, _ = load_trained(tmp_path / "pruned.pt")
    assert slim.structure(model) == {**slim.structure(load_trained(source)[0]), **plan.kept_channels}
    assert model_cost(model, X[:, :1]).params < model_cost(load_trained(source)[0], X[:, :1]).params
    assert main(["eval", str(tmp_path / "pruned.pt"), "--quiet"]) == 0
    assert "layer4.1.relu:1" in capsys.readouterr().out
    tuned = train(config, tmp_path / "tuned", optim=config.finetune, masked=True, init=tmp_path / "pruned.pt",
                  progress=False)
    assert slim.structure(tuned.model) == slim.structure(model)
    resumed = train(config, tmp_path / "tuned", optim=config.finetune, masked=True, resume=True, progress=False)
    assert slim.structure(resumed.model) == slim.structure(model)  # the pruned shapes come from the checkpoint
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, tiny_run) -> Path:
    """A checkpoint written by ``zebra train`` with the tiny run's settings, shared by the tests that only read it."""
    source = tmp_path_factory.mktemp("trained") / "run" / "last.pt"
    assert main(["train", *tiny_run.args(), "--run-dir", str(source.parent)]) == 0
    return source


@pytest.mark.xdist_group("trained_checkpoint")  # the fixture trained once: its tests on one xdist worker
@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.5"], "slim.ratio=1.5 is invalid"),
    (["--ratio", "0"], "slim.ratio=0.0 is invalid"),
    (["--ratio", "0.99", "--min-channels", "2"], "would empty layers"),
    (["--exclude", "*"], "leaves no BatchNorm layer"),
    ([], "give --output"),
])
def test_prune_cli_bad_input_leaves_the_checkpoint_untouched(tmp_path, capsys, args, message, trained_checkpoint):
    source = trained_checkpoint
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    output = [] if not args else ["--output", str(tmp_path / "out.pt")]
    capsys.readouterr()
    assert main(["prune", str(source), *output, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest and not (tmp_path / "out.pt").exists()
    assert main(["prune", str(source), "--output", str(source)]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert main(["prune", str(source), "--dry-run", "--ratio", "0.3"]) == 0
    assert "Network Slimming plan: remove 30%" in capsys.readouterr().out


@pytest.mark.slow  # five training runs
def test_slim_compare_reports_the_four_ways(tmp_path, capsys, tiny_run):
    assert main(["slim", "--flow", "compare", *tiny_run.args(), "--run-dir", str(tmp_path / "c")]) == 0
    summary = json.loads((tmp_path / "c" / "report.json").read_text())
    rows = {row["label"]: row for row in summary["rows"]}
    assert {"dense baseline", "Zebra", "Slimming", "Slimming+Zebra"} <= set(rows)
    assert summary["reference"] == "dense baseline" and rows["dense baseline"]["reduction"]["dense"] == 0
    assert rows["Slimming"]["params"] < rows["dense baseline"]["params"]
    assert rows["Slimming+Zebra"]["macs"] == rows["Slimming"]["macs"] < rows["Zebra"]["macs"]
    assert rows["Slimming"]["reduction"]["dense"] > 0.05  # smaller maps count as less traffic
    markdown = (tmp_path / "c" / "report.md").read_text()
    assert "| Slimming+Zebra |" in markdown and "MMACs/image" in markdown
    for folder in ("baseline", "zebra", "sparse", "slim", "slim-zebra"):
        assert (tmp_path / "c" / folder / "last.pt").is_file(), folder


@pytest.mark.slow  # three training stages
def test_joint_flow_trains_zebra_and_sparsity_together(tmp_path, tiny_run):
    assert main(["slim", "--flow", "joint", *tiny_run.args(), "--run-dir", str(tmp_path / "j")]) == 0
    sparse = load_checkpoint(tmp_path / "j" / "sparse" / "last.pt")
    assert sparse.masked and sparse.extensions["bn_sparsity"]["s"] > 0
    summary = json.loads((tmp_path / "j" / "report.json").read_text())
    assert [row["label"] for row in summary["rows"]] == [
        "sparsity-trained, before pruning", "pruned, before fine-tuning", "Slimming+Zebra"]
