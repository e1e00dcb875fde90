"""The `paper` preset end to end on the CPU: `zebra run --preset paper` on a small Tiny-ImageNet tree, shrunk to
seconds (width 4, one epoch of 18 images per stage) but with the preset's own Zebra recipe."""

import pytest
import torch
import yaml
from fixtures import tiny_imagenet_tree

from torchzebra.cli import main
from torchzebra.config import load_config
from torchzebra.results import read_result

SHRINK = ("device=cpu", "data.workers=0", "data.batch_size=6", "data.eval_batch_size=6",
          "model.options={stem: imagenet, width: 4}", "train.epochs=1", "finetune.epochs=1",
          "zebra.density_ramp_steps=2", "zebra.calibrate_every=1")  # the ramp scaled to this run's 3 steps


@pytest.mark.slow  # zebra run: two training runs (bf16, channels-last), the report and the estimate
def test_paper_preset_runs_baseline_and_zebra_on_tiny_imagenet(tmp_path):
    tiny_imagenet_tree(tmp_path / "data", per_class=6)
    run_dir = tmp_path / "run"
    settings = [f"data.root={tmp_path / 'data'}", *SHRINK]
    assert main(["run", "--preset", "paper", *[a for s in settings for a in ("--set", s)], "--run-dir", str(run_dir),
                 "--quiet"]) == 0
    preset = load_config("paper")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"] == {"method": "zebra"}
    assert saved["distill"] == {"weight": 1.0, "temperature": 4.0, "targets": "batch"}
    assert saved["zebra"]["density"] == preset.zebra.density and saved["zebra"]["block_size"] == preset.zebra.block_size
    assert saved["train"]["precision"] == "bf16" and saved["finetune"]["channels_last"] is True
    result = read_result(run_dir / "report.json")
    dense, zebra = result.rows
    assert (dense.method, zebra.method) == ("dense", "zebra") and zebra.traffic.images == 6  # the 6 validation images
    assert zebra.reduction["zebra_zvc"] > dense.reduction["zebra_zvc"] + 0.2
    kept = {layer.name: layer.block_density for layer in zebra.traffic.layers}
    assert max(kept[name] for name in kept if name.startswith("layer1.")) < 0.4  # calibrated to keep 19%
    checkpoint = torch.load(run_dir / "zebra" / "last.pt", weights_only=True)
    assert checkpoint["extensions"] == {"distillation": {"weight": 1.0, "temperature": 4.0}}
    optim = checkpoint["optim"]  # the fine-tune repeats the baseline's recipe
    assert (optim["lr"], optim["schedule"]) == (preset.train.lr, preset.train.schedule) == (0.2, "onecycle")
    assert "| dense baseline |" in (run_dir / "report.md").read_text() and (run_dir / "estimate.json").is_file()
