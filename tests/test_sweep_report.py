"""Sweeps (resumable grids of methods) and the HTML/Markdown report, checked in headless Chromium."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

import torchzebra as tz
from torchzebra.cli import main
from torchzebra.config.run import ConfigError
from torchzebra.reports.summary import Point, best_within, pareto_front
from torchzebra.results import CHECKPOINT
from torchzebra.training import load_checkpoint, load_trained
from torchzebra.workflows import sweep as sweep_module

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def point(method, top1, reduction, baseline=0.9):
    return Point(method, f"{method}-{top1}-{reduction}", top1, baseline,
                 {"dense": 0.0, "zvc": reduction / 2, "zebra": reduction, "zebra_zvc": reduction - 0.01}, None)


def test_pareto_front_and_budget():
    points = [point("zebra", 0.90, 0.3), point("zebra", 0.89, 0.6), point("zebra", 0.88, 0.5),
              point("zebra", 0.85, 0.8), point("l1", 0.895, 0.4)]
    assert [p.top1 for p in pareto_front(points[:4])] == [0.90, 0.89, 0.85]
    best = best_within(points, budget_points=1.0)
    assert best["zebra"].top1 == 0.89 and best["zebra"].best_format == "zebra" and best["l1"].top1 == 0.895
    assert best_within(points, budget_points=0.1)["zebra"].top1 == 0.90


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_run):
    """A sweep of eight points (the tests that read it are slow: it trains them all)."""
    run_dir = tmp_path_factory.mktemp("sweep") / "run"
    args = ["sweep", *tiny_run.args(), "--grid", "zebra.block_size=[2, map]", "--grid", "l1:zebra.lam=[0.05]",
            "--set", "sweep.points=[{method: zebra, zebra.lam: 0.05}, {method: dense-retrained}]",
            "--methods", "zebra", "l1", "slim-zebra",
            "--run-dir", str(run_dir)]
    assert main(args) == 0
    return run_dir, args


@pytest.mark.slow  # the sweep fixture, built once: its tests on one xdist worker
@pytest.mark.xdist_group("swept")
def test_sweep_rows_and_resume(swept, monkeypatch):
    run_dir, args = swept
    rows = json.loads((run_dir / "sweep.json").read_text())["rows"]
    assert [row["label"] for row in rows] == [
        "dense", "zebra,zebra.block_size=2", "zebra,zebra.block_size=map",
        "l1,zebra.lam=0.05",  # l1 fixes its block size; its lam axis is its own
        "slim-zebra,zebra.block_size=2", "slim-zebra,zebra.block_size=map", "zebra,zebra.lam=0.05", "dense-retrained"]
    for row in rows:
        assert 0 <= row["top1"] <= 1 and set(row["reduction"]) == {"dense", "zvc", "zebra", "zebra_zvc"}
        layers = {layer["name"]: layer for layer in row["traffic"]["layers"]}
        assert "layer1.0.relu" in layers and 0 <= layers["layer1.0.relu"]["block_density"] <= 1
    assert rows[-3]["reduction"]["dense"] > 0.05  # the slimmed model's smaller maps
    control, _ = load_trained(run_dir / "points" / "dense-retrained" / CHECKPOINT)  # retrained without masks
    assert rows[-1]["method"] == "dense-retrained" and not any(layer.active for _, layer in tz.zebra_layers(control))
    csv_lines = (run_dir / "sweep.csv").read_text().splitlines()
    assert csv_lines[0].startswith("point,method,zebra.block_size,zebra.lam,top1") and len(csv_lines) == 9

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr(sweep_module, "train", no_training)
    assert main(args) == 0  # the same command again: every point is found finished
    assert json.loads((run_dir / "sweep.json").read_text())["rows"] == rows
    saved = (run_dir / "config.yaml").read_text()
    original = yaml.safe_load(saved)
    with pytest.raises(ConfigError, match="trained with other settings"):
        sweep_module.run_sweep(sweep_module.from_dict({**original, "seed": 7}), run_dir, progress=False)
    assert (run_dir / "config.yaml").read_text() == saved  # refused before anything was written
    zebra_only = sweep_module._stage_config({**original, "zebra": {**original["zebra"], "calibrate_every": 4}}, {})
    assert sweep_module._finished(run_dir / "baseline", zebra_only) is not None  # the dense baseline ignores Zebra's
    finetune_only = sweep_module._stage_config({**original, "finetune": {**original["finetune"], "lr": 0.02}}, {})
    assert sweep_module._finished(run_dir / "baseline", finetune_only, baseline=True) is not None  # and the fine-tune's
    with pytest.raises(ConfigError, match=r"finetune\.lr"):  # which a stage fine-tuned from it reads
        sweep_module._finished(run_dir / "baseline", finetune_only)


@pytest.mark.slow  # several training runs
def test_slimming_points_of_other_ratios_share_one_sparsity_training(tmp_path, tiny_run, monkeypatch, capsys):
    trained = []
    real_train = sweep_module.train
    monkeypatch.setattr(sweep_module, "train", lambda config, folder, **kw: trained.append(folder.name) or real_train(
        config, folder, **kw))
    args = ["sweep", *tiny_run.args(), "--methods", "slim", "--grid", "slim.ratio=[0.25, 0.5]", "--run-dir",
            str(tmp_path)]
    assert main(args) == 0
    assert trained == ["baseline", "sparse-s0.0001", "slim,slim.ratio=0.25", "slim,slim.ratio=0.5"]
    assert "[1/2] slim,slim.ratio=0.25\n" in capsys.readouterr().out
    assert main(args) == 0 and len(trained) == 4  # a rerun says what it skips
    announced = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert announced == [f"[baseline] 1 epoch -> {tmp_path / 'baseline'}: skipped (finished)",
                         "[1/2] slim,slim.ratio=0.25: skipped (finished)",
                         "[2/2] slim,slim.ratio=0.5: skipped (finished)"]
    plans = {ratio: load_checkpoint(tmp_path / "sparse-s0.0001" / f"pruned-r{ratio:g}-m1.pt").plan
             for ratio in (0.25, 0.5)}
    assert [plans[r]["ratio"] for r in plans] == [0.25, 0.5]  # each point pruned at its own ratio
    assert sum(len(g["keep"]) for g in plans[0.25]["groups"]) > sum(len(g["keep"]) for g in plans[0.5]["groups"])


def test_a_point_is_labelled_as_written_and_stored_under_a_safe_folder_name():
    point = {"zebra.density": {"layer3.*": 0.3, "*": 0.15}, "finetune.epochs": 6}
    assert sweep_module.point_label("zebra", point) == "zebra,zebra.density={layer3.*: 0.3, *: 0.15},finetune.epochs=6"
    assert sweep_module.point_name("zebra", point) == "zebra,zebra.density=__layer3.___0.3,____0.15_,finetune.epochs=6"


def test_sweep_rejects_bad_grids(tmp_path, capsys, tiny_run):
    assert main(["sweep", *tiny_run.args(), "--grid", "zebra.block_size=4", "--run-dir", str(tmp_path / "a")]) == 2
    assert "give a non-empty list" in capsys.readouterr().err
    assert main(["sweep", *tiny_run.args(), "--grid", "zebra.block_size=[0, 2]", "--run-dir", str(tmp_path / "b")]) == 2
    assert "block_size=0 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "b" / "baseline").exists()  # refused before any training
    assert main(["sweep", *tiny_run.args(), "--grid", "slim:zebra.lam=[1]", "--run-dir", str(tmp_path / "c")]) == 2
    assert "sweep.methods does not run" in capsys.readouterr().err
    args = ["sweep", *tiny_run.args(), "--set", "sweep.points=[{zebra.lam: 1}]", "--run-dir", str(tmp_path / "d")]
    assert main(args) == 2
    assert "sweep.points entry" in capsys.readouterr().err


@pytest.mark.slow  # the sweep fixture, built once: its tests on one xdist worker
@pytest.mark.xdist_group("swept")
def test_report_page(swept, tmp_path):
    run_dir, _ = swept
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out), "--images", "2"]) == 0
    page = (out / "report.html").read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 4  # pareto, layers, 2 stripe pictures
    assert "Best within 1 point" in page and "Slimming+Zebra" in page
    markdown = (out / "report.md").read_text()
    assert "| Zebra |" in markdown and "![" in markdown
    for name in ("pareto.png", "layers.png", "stripes-0.png", "stripes-1.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # the sweep fixture, built once: its tests on one xdist worker
@pytest.mark.xdist_group("swept")
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(swept, tmp_path):
    run_dir, _ = swept
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out), "--images", "1"]) == 0
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
         (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, result.stderr[-2000:]
    attributes = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))
    assert attributes.get("images") == attributes.get("loaded") == "3", attributes
    assert "errors" not in attributes


def test_report_of_a_folder_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "holds no sweep.json or report.json" in capsys.readouterr().err
