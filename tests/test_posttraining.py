"""zebra calibrate: arguments refused before any work, BatchNorm re-estimation, the held-out check and its margin."""

from pathlib import Path
from statistics import NormalDist

import pytest
import torch
from torch import nn

import torchzebra as tz
from torchzebra.analysis import allocation
from torchzebra.cli import main
from torchzebra.results import ModelRow, read_result
from torchzebra.workflows.no_training import _training_images, budget_lines, command_line, search_plan


@pytest.mark.parametrize("args, named", [
    (["--budget", "-1"], "--budget -1.0 is invalid"),
    (["--budget", "0.5", "-1"], "--budget -1.0 is invalid"),
    (["--budget", "nan"], "--budget nan is invalid"),
    (["--budget", "0"], "--budget 0.0 is invalid: use the top-1 points you accept to lose, > 0"),
    (["--budget", "1", "0.5", "1"], "--budget 1 is given twice"),
    (["--images", "0"], "--images 0 is invalid"),
    (["--images", "-5"], "--images -5 is invalid"),
    (["--holdout", "0"], "--holdout 0 is invalid"),
    (["--block-sizes", "2", "0"], "--block-sizes 0 is invalid"),
    (["--block-sizes", "-2"], "--block-sizes -2 is invalid"),
    (["--densities", "0.5", "0"], "--densities 0.0 is invalid"),
    (["--densities", "1.5"], "--densities 1.5 is invalid"),
    (["--rounds", "0"], "--rounds 0 is invalid"),
])
def test_a_bad_argument_is_one_line_before_the_checkpoint_is_read(args, named, tmp_path, capsys):
    """The checkpoint does not exist: the argument is refused first, and nothing is written."""
    out = tmp_path / "out"
    assert main(["calibrate", str(tmp_path / "missing.pt"), "--out", str(out), *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zebra calibrate: error: {named}") and err.count("\n") == 1
    assert not out.exists()


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["calibrate", str(tmp_path / "missing.pt"), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zebra calibrate: error: ") and "missing.pt" in err and err.count("\n") == 1
    assert not out.exists()


def test_the_recorded_command_names_the_densities_and_rounds_only_where_they_are_not_the_default():
    default = search_plan([2], list(reversed(allocation.DENSITIES)))  # the defaults in another order
    assert "--densities" not in command_line("m.pt", Path("out"), [1], plan=default)
    assert "--rounds" not in command_line("m.pt", Path("out"), [1], plan=default)
    chosen = search_plan(densities=[0.6, 0.3], rounds=2)
    assert command_line("m.pt", Path("out"), [1], plan=chosen).endswith("--densities 0.3 0.6 1 --rounds 2")


def test_the_budget_table_names_the_round_only_where_there_were_several():
    def row(budget, round_=None):
        settings = {"budget_points": budget, "held_out_top1": 0.9, "held_out_dense_top1": 0.91, "margin_points": 0.3,
                    **({"round": round_} if round_ else {})}
        return ModelRow("b", "zebra-calibrated", 0.905, -0.005, {"zebra_zvc": 0.5}, {}, settings=settings)

    dense = ModelRow("dense", "dense", 0.91, 0.0, {"zebra_zvc": 0.3}, {})
    lines, _ = budget_lines((dense, row(0.5), row(1.0)))  # a report written before rounds existed
    assert "round" not in lines[0] and lines[1].count("---") == 8
    lines, warnings = budget_lines((dense, row(0.5, 1), row(1.0, 2)))
    assert lines[0].endswith("| round |") and lines[1].count("---") == 9
    assert lines[2].endswith("| 50.00 | 1 |") and lines[3].endswith("| 50.00 | 2 |") and not warnings


def test_the_help_names_the_default_densities(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default {' '.join(f'{d:g}' for d in allocation.DENSITIES)};" in help_text


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                         nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def test_batchnorm_statistics_are_re_estimated_without_training():
    model = tz.prepare(_net(), tz.ZebraConfig(block_size=2)).eval()
    x = torch.randn(40, 1, 8, 8)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k}
    allocation.reestimate_batchnorm(model, x)
    norm = allocation.batch_norms(model)[0]
    expected = model.get_submodule("0")(x)  # the first BatchNorm's input: the stem conv of x
    assert torch.allclose(norm.running_mean, expected.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(norm.running_var, expected.var((0, 2, 3)), atol=1e-4)
    assert norm.momentum == 0.1 and not norm.training and not model.training  # settings and modes given back
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # no weight moved


def test_the_margin_is_one_sided_over_the_check_and_the_quoted_split():
    model = tz.prepare(_net()).eval()
    x, y = torch.randn(100, 1, 8, 8), torch.zeros(100, dtype=torch.long)
    check = allocation.HeldOutCheck(model, x, y, quoted_images=400)
    flipped = check.hits.clone()
    flipped[:4] = ~flipped[:4]  # 4 % of the images change
    z = NormalDist().inv_cdf(allocation.CONFIDENCE)
    assert check.margin(flipped) == pytest.approx(100 * z * (0.04 * (1 / 100 + 1 / 400)) ** 0.5)
    assert check.margin(check.hits) == 0.0


def test_a_search_with_held_out_images_keeps_drop_plus_margin_within_budget():
    net = _net()
    x = torch.randn(240, 1, 8, 8)
    with torch.no_grad():
        y = net.eval()(x).argmax(1)  # labels the model gets right: masking can only lose top-1
    model = tz.prepare(net, tz.ZebraConfig(block_size=2))
    measured = allocation.profile(model, [(x[:80], y[:80])], held_out=[(x[80:], y[80:])], quoted_images=1000)
    for budget in (0.0, 5.0, 100.0):
        chosen = allocation.search(model, budget_points=budget, measured=measured)
        assert chosen.check_images == 160 and chosen.dense_top1 == 1.0
        assert chosen.drop_points + chosen.margin_points <= budget + 1e-9
    assert chosen.reduction > 0 and min(chosen.densities.values()) < 1.0  # budget 100: something is masked


def test_calibration_and_held_out_images_are_disjoint():
    data = [(torch.full((1, 2, 2), float(i)), i % 3) for i in range(30)]
    (a, la), (b, lb) = _training_images(data, (5, 20), seed=0)
    assert len(a) == len(la) == 5 and len(b) == len(lb) == 20
    assert not set(a[:, 0, 0, 0].tolist()) & set(b[:, 0, 0, 0].tolist())


@pytest.mark.slow  # trains the tiny run, then profiles every layer of a ResNet-18
def test_zebra_calibrate_reports_the_held_out_check_and_its_command(tmp_path, capsys, tiny_run):
    assert main(["train", *tiny_run.args(), "--run-dir", str(tmp_path / "dense")]) == 0
    checkpoint, out = tmp_path / "dense" / "last.pt", tmp_path / "cal"
    assert main(["calibrate", str(checkpoint), "--out", str(out), "--images", "100", "--holdout", "157",
                 "--quiet"]) == 2  # 257 images: the data has 256
    assert capsys.readouterr().err.startswith("zebra calibrate: error: --images 100 and --holdout 157 need 257")
    assert not out.exists()
    assert main(["calibrate", str(checkpoint), "--out", str(out), "--budget", "0.01", "50", "--images", "64",
                 "--holdout", "128", "--quiet"]) == 0
    result = read_result(out / "report.json")
    assert result.info.command.startswith(f"zebra calibrate {checkpoint} --out {out} --budget 0.01 50 --images 64 "
                                          "--holdout 128")
    strict, loose = result.rows[1:]
    drop = (strict.settings["held_out_dense_top1"] - strict.settings["held_out_top1"]) * 100
    assert strict.settings["held_out_images"] == 128 and strict.settings["margin_points"] >= 0.0
    assert drop + strict.settings["margin_points"] <= 0.01  # within the budget on the held-out images, margin included
    markdown = (out / "report.md").read_text()
    assert "| budget (points) | held-out top-1 % |" in markdown and markdown.count("\n| 50 |") == 1
    assert ("**Warning**: budget 50" in markdown) == (-loose.delta_top1 * 100 > 50)


def test_searched_block_sizes_go_first_in_the_checkpoints_config(tmp_path):
    """A model built from the calibrated checkpoint's config has the block sizes the search chose."""
    from torchzebra.config import load_config
    from torchzebra.workflows.no_training import _with_block_sizes

    config = load_config("quick")
    own = {"stem.2": 2, "layer1.0.relu": 2}
    chosen = _with_block_sizes(config, {"stem.2": 2, "layer1.0.relu": 4}, own)
    assert chosen.zebra.block_size == {"layer1.0.relu": 4, "*": 2}
    assert chosen.zebra.for_site("layer1.0.relu").block_size == 4 and chosen.zebra.for_site("stem.2").block_size == 2
    assert _with_block_sizes(config, own, own) is config  # nothing changed: the config as it was
