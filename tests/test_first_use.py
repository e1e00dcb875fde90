"""What a new user meets first: one sign convention for top-1 changes, captions that say what a figure shows,
help that names every file, file modes, quiet logs, and warnings where a setting has no effect."""

import stat
import sys
import warnings
from collections import Counter

import pytest
import torch

import torchzebra as tz
from torchzebra._io import FILE_MODE, atomic_write_text
from torchzebra.cli import main, verbs
from torchzebra.config.run import SweepSection
from torchzebra.export import to_onnx
from torchzebra.reports import html as report_html
from torchzebra.reports.summary import Point, points_markdown
from torchzebra.results import ModelRow
from torchzebra.results.tables import DELTA_TOP1_TITLE, points_change, rows_markdown
from torchzebra.training.extensions import warn_short_ramp
from torchzebra.workflows import sweep as sweep_module

FORMAT_REDUCTION = {"dense": 0.0, "zvc": 0.3, "zebra": 0.5, "zebra_zvc": 0.6}


def _point(method: str, top1: float, label: str = "") -> Point:
    return Point(method, label or f"{method}-{top1}", top1, 0.9194, FORMAT_REDUCTION, None)


def test_a_top1_loss_is_negative_in_every_table_and_each_header_says_so():
    """The HTML report, report.md and the run/slim/calibrate tables print a loss of 0.13 points as -0.13."""
    loss, gain = _point("zebra", 0.9181), _point("dense-retrained", 0.9249)
    assert points_change(loss.delta) == "-0.13" and points_change(gain.delta) == "+0.55"
    assert points_change(-0.0001) == "+0.00"  # a change that rounds to nothing has no minus sign
    markdown = points_markdown([loss, gain])
    assert DELTA_TOP1_TITLE in markdown.splitlines()[0] and "| -0.13 |" in markdown and "| +0.55 |" in markdown
    page = report_html._html(["run"], [loss, gain], [], 1.0)
    assert f"<th>{DELTA_TOP1_TITLE}</th>" in page and "<td>-0.13</td>" in page
    assert "(-0.13 points against the baseline)" in page  # the headline of the best point within the budget
    row = ModelRow("Zebra calibrated", "calibrated", 0.9173, 0.9173 - 0.9194, FORMAT_REDUCTION, {})
    table = rows_markdown([row])
    assert DELTA_TOP1_TITLE in table.splitlines()[0] and "| -0.21 |" in table


def test_the_pareto_caption_promises_lines_only_where_a_method_has_two_points():
    single_run = [_point("dense", 0.9194), _point("zebra", 0.9181)]
    assert "no front to draw" in report_html.pareto_caption(single_run)
    assert "lines" not in report_html.pareto_caption(single_run)
    sweep = [*single_run, _point("zebra", 0.91, "zebra,lam=1")]
    assert "lines: the Pareto front of each method" in report_html.pareto_caption(sweep)


def test_the_map_pictures_say_which_channels_they_show():
    caption = report_html.stripes_caption("run: Zebra", 0)
    assert "the 4 channels of largest activation" in caption and "over all its channels" in caption


def test_export_help_names_every_file_it_writes(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
    for name in ("topology.csv", "layout.csv", "layers.csv", "density.yaml", "maps/", "model.onnx"):
        assert name in text


@pytest.mark.slow  # an ONNX export (the dynamo exporter traces and compiles)
def test_model_onnx_gets_the_mode_of_every_other_file(tmp_path, residual_net):
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed: pip install 'torchzebra[onnx]'")
    model = tz.prepare(residual_net, tz.ZebraConfig(block_size=2, threshold=0.1))
    onnx_file = to_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "model.onnx")
    atomic_write_text(tmp_path / "density.yaml", "a: 1\n")
    assert stat.S_IMODE(onnx_file.stat().st_mode) == stat.S_IMODE((tmp_path / "density.yaml").stat().st_mode)
    assert stat.S_IMODE(onnx_file.stat().st_mode) == FILE_MODE


@pytest.mark.parametrize("terminal, quiet", [(True, False), (False, True)])
def test_no_progress_bars_when_stderr_is_not_a_terminal(monkeypatch, terminal, quiet):
    """A log file or a pipe gets no progress bars; a terminal gets them unless --quiet."""
    seen = []
    monkeypatch.setitem(verbs.VERBS, "report", lambda args: seen.append(args.quiet) or 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)
    assert main(["report", "somewhere", "--out", "elsewhere"]) == 0 and seen == [quiet]


def test_a_missing_image_folder_root_says_so(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "--set", "data.name=imagefolder", "--set", f"data.root={missing}", "--quiet",
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"ImageFolder data set not found: {missing} does not exist; set data.root" in err
    assert "no train folder" not in err and err.count("\n") == 1


def test_training_shorter_than_the_density_ramp_is_warned(residual_net):
    """47 steps of a 400-step ramp end at 76 % of the blocks kept, not the 20 % asked for: warned."""
    model = tz.prepare(residual_net, tz.ZebraConfig(block_size=2))
    with pytest.warns(UserWarning, match=r"density_ramp_steps=400 is longer than this training \(47 steps\): its last "
                                         r"step recalibrates to keep 0\.755 of the blocks, not zebra.density=0.2; "
                                         r"train more"):
        warn_short_ramp(tz.ZebraRecipe(model, density=0.2, density_ramp_steps=400), 47)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_short_ramp(tz.ZebraRecipe(model, density=0.2, density_ramp_steps=400), 400)
        warn_short_ramp(tz.ZebraRecipe(model, density=None, density_ramp_steps=400), 47)


def test_a_grid_axis_that_does_not_apply_to_a_method_trains_it_once():
    """A density or Slimming axis does not change a method without Zebra or without pruning; the block size
    still does (it sets what is measured)."""
    sweep = SweepSection(methods=["zebra", "dense-retrained", "slim"],
                         grid={"zebra.density": [0.2, 0.4], "slim.ratio": [0.3, 0.5]})
    counts = Counter(method for method, _ in sweep_module._method_points(sweep))
    assert counts == {"zebra": 2, "dense-retrained": 1, "slim": 2}
    measured = SweepSection(methods=["dense-retrained"], grid={"zebra.block_size": [2, 4]})
    assert len(sweep_module._method_points(measured)) == 2
