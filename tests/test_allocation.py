"""Per-layer density allocation and the no-training route (zebra calibrate)."""

import json

import pytest
import torch

import torchzebra as tz
from torchzebra.analysis import allocation
from torchzebra.cli import main
from torchzebra.results import read_result
from torchzebra.training.checkpoint import load_checkpoint


@pytest.fixture
def probe_data(residual_net):
    """The residual net with its classifier fitted to its own outputs, so masking can change predictions."""
    x = torch.randn(96, 1, 8, 8)
    with torch.no_grad():
        y = residual_net(x).argmax(1)
    return tz.prepare(residual_net, tz.ZebraConfig(block_size=2)), x, y


def test_allocate_trades_bytes_against_cost():
    curve = allocation.LayerCurve("a", ((2, 0.2), (2, 0.5), (2, 1.0)), (1.0, 0.1, 0.0), (20, 50, 100))
    assert allocation.allocate([curve], 0.0, 100) == {"a": (2, 0.2)}  # bytes only
    assert allocation.allocate([curve], 1e6, 100) == {"a": (2, 1.0)}  # cost only
    assert allocation.allocate([curve], 1.0, 100) == {"a": (2, 0.5)}  # 0.5 + 0.1 beats 0.2 + 1.0 and 1.0 + 0


def test_allocate_picks_the_block_size_with_it():
    """A larger block at density 1 sends less metadata at no cost; a smaller one keeps more at the same bytes."""
    curve = allocation.LayerCurve("a", ((2, 0.5), (2, 1.0), (4, 0.5), (4, 1.0)), (0.1, 0.0, 0.4, 0.0),
                                  (50, 100, 45, 90))
    assert allocation.allocate([curve], 1e6, 100) == {"a": (4, 1.0)}
    assert allocation.allocate([curve], 1.0, 100) == {"a": (2, 0.5)}  # 0.5 + 0.1 beats 0.45 + 0.4 and 0.9 + 0
    assert allocation.allocate([curve], 0.0, 100) == {"a": (4, 0.5)}


def test_a_search_over_block_sizes_leaves_the_model_with_the_chosen_ones(probe_data):
    model, x, y = probe_data
    measured = allocation.profile(model, [(x, y)], allocation.Grid(block_sizes=(2, 4)))
    assert all({size for size, _ in curve.settings} == {2, 4} for curve in measured.curves)
    loose = allocation.search(model, budget_points=100.0, measured=measured)
    assert {site: layer.block_size for site, layer in tz.zebra_layers(model)} == loose.block_sizes
    assert tz.measure(model, [(x, y)]).reduction("zebra_zvc") == pytest.approx(loose.reduction)
    strict = allocation.search(model, budget_points=0.0, measured=measured)
    assert strict.top1 == pytest.approx(strict.dense_top1)
    assert {site: layer.block_size for site, layer in tz.zebra_layers(model)} == strict.block_sizes


def test_a_grid_without_the_layers_own_block_size_can_still_leave_a_layer_as_it_is(probe_data):
    model, x, y = probe_data
    measured = allocation.profile(model, [(x, y)], allocation.Grid((0.5,), block_sizes=(4,)))
    assert all(set(curve.settings) == {(2, 1.0), (4, 0.5), (4, 1.0)} for curve in measured.curves)
    for budget in (0.0, 100.0):
        chosen = allocation.search(model, budget_points=budget, measured=measured)
        assert chosen.drop_points <= budget


def test_search_keeps_the_budget_on_its_images_and_saves_more_with_a_larger_one(probe_data):
    model, x, y = probe_data
    measured = allocation.profile(model, [(x, y)])
    assert len(measured.curves) == len(tz.zebra_layers(model))
    for curve in measured.curves:  # density 1 keeps the most bytes
        bytes_at = dict(zip(curve.settings, curve.bytes))
        assert bytes_at[(2, 1.0)] >= bytes_at[(2, 0.1)]
    strict = allocation.search(model, budget_points=0.0, measured=measured)
    loose = allocation.search(model, budget_points=100.0, measured=measured)
    assert strict.drop_points <= 0 and strict.top1 == pytest.approx(strict.dense_top1)
    assert loose.reduction > strict.reduction and min(loose.densities.values()) < 1.0
    report = tz.measure(model, [(x, y)])  # the model keeps the last search's thresholds
    assert report.reduction("zebra_zvc") == pytest.approx(loose.reduction)
    thresholds = {site: layer.threshold.item() for site, layer in tz.zebra_layers(model)}
    assert thresholds == pytest.approx(loose.thresholds)


def test_curves_in_context_are_measured_with_the_other_layers_at_the_allocation(probe_data):
    model, x, y = probe_data
    measured = allocation.profile(model, [(x, y)], (0.3, 1.0))
    assert allocation.in_context(measured, {s: (2, 1.0) for s in measured.sites}) is measured  # masks nothing
    first, *others = measured.sites
    context = {first: (2, 0.3), **{site: (2, 1.0) for site in others}}
    refined = allocation.in_context(measured, context)
    assert refined.probe is measured.probe and refined.tried is measured.tried  # one check, one memory of trials
    assert [c.settings for c in refined.curves] == [c.settings for c in measured.curves]
    alone = {c.site: dict(zip(c.settings, c.cost)) for c in measured.curves}
    together = {c.site: dict(zip(c.settings, c.cost)) for c in refined.curves}
    assert alone[first] == pytest.approx(together[first])  # the others unmasked in the context: the same curve
    for site in others:  # the first layer masked: leaving this one as it is costs what the first layer costs
        assert alone[site][(2, 1.0)] == 0.0
        assert together[site][(2, 1.0)] == pytest.approx(alone[first][(2, 0.3)], rel=1e-4)
        assert together[site][(2, 0.3)] != pytest.approx(alone[site][(2, 0.3)])


def _whole_pass_point(probe, site, settings):
    """A curve point measured the plain way: calibrate, then a whole measuring pass."""
    probe.set_settings(settings, renorm=False)
    logits, report = probe.run()
    return logits, next(layer.bytes[probe.fmt] for layer in report.layers if layer.name == site)


def test_a_point_reuses_what_the_layers_before_it_computed_and_equals_a_whole_pass(probe_data):
    model, x, y = probe_data
    with tz.eval_mode(model):
        probe = allocation.Probe(model, x, y, "zebra_zvc", 8)
        first, *later = probe.sites
        contexts = [{}, {first: (2, 0.3)}, {site: (4, 0.5) for site in later}]
        assert later
        calls = []
        model.get_submodule("conv1").register_forward_hook(lambda *_: calls.append(1))  # before every site
        for context in contexts:
            for site in probe.sites:
                for setting in ((2, 0.5), (4, 0.3), (2, 0.5)):
                    settings = {**context, site: setting}
                    logits, size = probe.point(site, settings)
                    reused = not calls
                    whole_logits, whole_size = _whole_pass_point(probe, site, settings)
                    assert torch.equal(logits, whole_logits) and size == whole_size, (context, site, setting)
                    calls.clear()
                    if setting == (4, 0.3):
                        assert reused  # the same layers before it as the call before: conv1 did not run


@pytest.mark.slow  # traces torchvision's ResNet-18; the small nets above cover each case in test-fast
def test_a_point_equals_a_whole_pass_on_a_torchvision_model_with_in_place_activations():
    """torchvision's ResNet-18 applies nn.ReLU(inplace=True), to maps that the kept values may hold."""
    torchvision = pytest.importorskip("torchvision")
    model = tz.prepare(torchvision.models.resnet18(num_classes=3).eval(), tz.ZebraConfig(block_size=2))
    x = torch.randn(4, 3, 32, 32)
    with tz.eval_mode(model), torch.no_grad():
        probe = allocation.Probe(model, x, model(x).argmax(1), "zebra_zvc", 8)
        for site in probe.sites[::3]:
            for setting in ((2, 0.5), (4, 0.3)):
                logits, size = probe.point(site, {site: setting})
                whole_logits, whole_size = _whole_pass_point(probe, site, {site: setting})
                assert torch.equal(logits, whole_logits) and size == whole_size, (site, setting)


class _InPlaceOnASharedMap(torch.nn.Module):
    """A ReLU writes in place, before the layer, into a map that a node after the layer also reads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
        self.relu, self.fc = torch.nn.ReLU(inplace=True), torch.nn.Linear(4, 3)

    def forward(self, x):
        a = self.conv1(x)
        return self.fc((self.conv2(self.relu(a)) + a).mean((2, 3)))


class _Branches(torch.nn.Module):
    """Two layers on parallel branches: neither depends on the other."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.cat([torch.relu(self.conv1(x)), torch.relu(self.conv2(x))], 1).mean((2, 3)))


class _InPlaceBesideTheLayer(torch.nn.Module):
    """A ReLU on another branch writes in place, after the layer, into a map that a node after the layer reads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x):
        a = torch.relu(self.conv1(x))
        h = self.conv2(x)
        g = torch.nn.functional.relu(h, inplace=True)
        return self.fc(torch.cat([a, h, g], 1).mean((2, 3)))


@pytest.mark.parametrize("net", [_InPlaceOnASharedMap, _Branches, _InPlaceBesideTheLayer])
def test_a_point_equals_a_whole_pass_where_other_nodes_write_in_place_or_run_beside_the_layer(net):
    model = tz.prepare(net().eval(), tz.ZebraConfig(block_size=2))
    x = torch.randn(8, 1, 8, 8)
    with tz.eval_mode(model), torch.no_grad():
        probe = allocation.Probe(model, x, model(x).argmax(1), "zebra_zvc", 8)
        site, *others = probe.sites
        for other_density in (1.0, 0.9, 0.2):  # a sibling's setting changes what the layer's points read
            for density in (0.5, 0.3):
                settings = {site: (2, density), **{other: (2, other_density) for other in others}}
                logits, size = probe.point(site, settings)
                whole_logits, whole_size = _whole_pass_point(probe, site, settings)
                assert torch.equal(logits, whole_logits) and size == whole_size, (settings, logits - whole_logits)


def test_the_unmasked_trial_runs_nothing(probe_data):
    model, x, y = probe_data
    measured = allocation.profile(model, [(x, y)], (0.5,), held_out=[(x, y)])
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    unmasked = measured.probe.trial(measured.unmasked(), measured.check)
    assert not calls
    assert (unmasked.top1, unmasked.margin_points) == (unmasked.dense_top1, 0.0)
    assert unmasked.reduction == measured.probe.report.reduction("zebra_zvc")
    other = {site: (4, 1.0) for site in measured.sites}  # another block size at density 1 changes the bytes
    assert measured.probe.trial(other, measured.check).reduction != unmasked.reduction and calls


def test_refine_searches_each_round_in_the_context_of_the_one_before_and_keeps_the_best(probe_data):
    model, x, y = probe_data
    measured = allocation.profile(model, [(x, y)], (0.2, 0.5, 1.0))
    budget = 20.0  # past the first layer at density 0.5 on these 96 images
    profiles = allocation.refine(model, measured, budget, rounds=2)
    assert len(profiles) == 2 and profiles[0] is measured
    first = allocation.search(model, budget_points=budget, measured=measured)
    assert min(first.densities.values()) < 1.0  # the context masks something
    assert profiles[1].curves != measured.curves
    each = [allocation.search(model, budget_points=budget, measured=p).reduction for p in profiles]
    best = allocation.search(model, budget_points=budget, measured=profiles)
    assert best.reduction >= first.reduction and best.drop_points <= budget
    assert best.reduction == max(each) and best.round == each.index(max(each)) + 1  # ties: the earlier round
    assert tz.measure(model, [(x, y)]).reduction("zebra_zvc") == pytest.approx(best.reduction)  # keeps the best
    assert allocation.refine(model, measured, budget, rounds=1) == [measured]
    assert best.settings == first.settings  # so a third round would measure the second's context again
    assert len(allocation.refine(model, measured, budget, rounds=3)) == 2
    assert all(layer.threshold.item() == 0.0 for _, layer in tz.zebra_layers(model))  # refine leaves it unmasked
    other = allocation.profile(model, [(x, y)], (0.2, 0.5, 1.0))
    with pytest.raises(ValueError, match="one probe"):
        allocation.search(model, budget_points=budget, measured=[measured, other])
    with pytest.raises(ValueError, match="rounds=0 is invalid"):
        allocation.refine(model, measured, budget, rounds=0)


def test_search_refuses_what_it_cannot_use(residual_net):
    with pytest.raises(ValueError, match="no active Zebra layer"):
        allocation.search(tz.prepare(residual_net, tz.ZebraConfig(include=())), [(torch.randn(4, 1, 8, 8),
                                                                                   torch.zeros(4, dtype=torch.long))])
    with pytest.raises(ValueError, match="budget_points=-1 is invalid"):
        allocation.search(tz.prepare(residual_net), [], budget_points=-1)


@pytest.mark.slow  # trains on Fashion-MNIST (a budget needs an accuracy that masking can lose), then searches
def test_zebra_calibrate_writes_checkpoints_and_a_front(tmp_path, capsys, tiny_run):
    assert main(["train", *tiny_run.args("data.name=fashion-mnist"), "--run-dir", str(tmp_path / "dense")]) == 0
    out = tmp_path / "calibrated"
    assert main(["calibrate", str(tmp_path / "dense" / "last.pt"), "--out", str(out), "--budget", "0.01", "50",
                 "--images", "64", "--holdout", "128", "--block-sizes", "2", "4", "--densities", "0.6", "0.3",
                 "--rounds", "2", "--set", "zebra.score=max", "--quiet"]) == 0
    result = read_result(out / "report.json")
    assert result.kind == "calibrate" and [row.method for row in result.rows] == ["dense", *2 * ["zebra-calibrated"]]
    dense, strict, loose = result.rows
    assert dense.top1 == read_result(tmp_path / "dense" / "report.json").rows[0].top1  # threshold 0 is exact
    assert loose.reduction["zebra_zvc"] > strict.reduction["zebra_zvc"] >= dense.reduction["zebra_zvc"]
    assert set(loose.settings["densities"]) >= {"layer1.0.relu", "layer4.1.relu:1"}
    assert set(loose.settings["block_sizes"].values()) <= {2, 4}
    assert set(loose.settings["densities"].values()) <= {0.3, 0.6, 1.0}
    assert "--block-sizes 2 4 --densities 0.3 0.6 1 --rounds 2 --set zebra.score=max" in result.info.command
    assert load_checkpoint(out / "budget-50" / "last.pt").config["zebra"]["score"] == "max"  # eval rebuilds it
    capsys.readouterr()
    assert main(["eval", str(out / "budget-50" / "last.pt"), "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == pytest.approx(loose.top1)
    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--no-pictures"]) == 0
    assert "Zebra calibrated, no training" in (tmp_path / "report" / "report.html").read_text()


def test_the_kept_blocks_table_names_the_block_sizes_where_they_are_not_all_one():
    from torchzebra.results import ModelRow
    from torchzebra.results.tables import allocation_markdown

    def row(sizes):
        return ModelRow("budget 1", "zebra-calibrated", 0.9, -0.01, {}, {}, settings={
            "densities": {"a": 0.5, "b": 1.0}, "block_sizes": sizes})

    assert "| a | 50.00 (block 4) |" in allocation_markdown([row({"a": 4, "b": 2})])
    assert "| a | 50.00 |" in allocation_markdown([row({"a": 2, "b": 2})])


def test_the_search_bridges_the_jump_of_the_lagrangian_path_one_layer_at_a_time():
    """Within budget: nothing masked; past it: both layers at 0.5. Masking only ``a`` fits the budget and is
    kept; adding ``b`` would not fit and is left out. The search runs on a fake trial: no model is measured."""
    curves = [allocation.LayerCurve(site, ((2, 0.5), (2, 1.0)), (cost, 0.0), (50, 100))
              for site, cost in (("a", 0.1), ("b", 0.2))]
    drops = {"a": 0.6, "b": 2.0}
    tried = []

    def trial(settings):
        tried.append(settings)
        masked = [site for site, (_, density) in settings.items() if density < 1]
        return allocation.Allocation({s: size for s, (size, _) in settings.items()},
                                     {s: density for s, (_, density) in settings.items()}, {},
                                     top1=1 - sum(drops[s] for s in masked) / 100, dense_top1=1.0,
                                     reduction=len(masked) / 4, fmt="zebra_zvc")

    within, over = {"a": (2, 1.0), "b": (2, 1.0)}, {"a": (2, 0.5), "b": (2, 0.5)}
    best = allocation.bridge(curves, trial, 1.0, trial(within), over)
    assert best.settings == {"a": (2, 0.5), "b": (2, 1.0)} and best.reduction == 0.25
    assert tried[1:] == [{"a": (2, 0.5), "b": (2, 1.0)}, {"a": (2, 0.5), "b": (2, 0.5)}]  # a saves more per cost
    tried.clear()
    found = allocation.best_within(curves, trial, 1.0, within, dense_bytes=200, steps=4)
    assert tried[0] == within and found.settings == best.settings  # the bisection ends past the budget: bridged
