"""Opening a trained model: ``open_checkpoint`` is the one place that turns a checkpoint into a model, its config,
its data and its device."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import torchzebra as tz
from torchzebra.data import DataSpec
from torchzebra.training import Checkpoint, CheckpointError, open_checkpoint, save_checkpoint
from torchzebra.training.building import build_prepared_model

PACKAGE = Path(tz.__file__).resolve().parent


@pytest.fixture
def saved(tmp_path, tiny_run):
    """An unmasked tiny model's checkpoint, with one site's threshold set (no training needed)."""
    config = tiny_run.config()
    spec = DataSpec(name="synthetic", classes=10, channels=1, size=32)
    model = build_prepared_model(config, spec, masked=False)
    site = next(name for name in model.state_dict() if name.startswith("zebra.") and "threshold" in name)
    state = {**model.state_dict(), site: torch.tensor(0.25)}
    path = tmp_path / "last.pt"
    save_checkpoint(path, Checkpoint(state, config.to_dict(), dataclasses.asdict(spec)))
    return path, site


def test_a_checkpoint_opens_as_saved_with_overrides_applied(saved):
    path, site = saved
    opened = open_checkpoint(path, ["data.eval_batch_size=32"])
    assert not opened.model.training and opened.device == torch.device("cpu")
    assert opened.config.data.eval_batch_size == 32 and opened.spec.classes == 10
    assert opened.model.state_dict()[site] == 0.25  # the saved thresholds
    assert not any(layer.active for _, layer in tz.zebra_layers(opened.model))
    assert opened.example_inputs().shape == (1, 1, 32, 32)
    report = opened.evaluate(progress=False)  # its test split, built on first use
    assert report.images == len(opened.test_set) == 128


def test_masked_takes_only_the_weights(saved):
    path, site = saved
    opened = open_checkpoint(path, masked=True)  # as a calibration starts: masks on, the model's own thresholds
    assert all(layer.active for _, layer in tz.zebra_layers(opened.model))
    assert opened.model.state_dict()[site] == 0.0


def test_a_checkpoint_of_another_model_is_one_line(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match=r"does not fit this model .*check model\.\* settings"):
        open_checkpoint(path, ["model.options={stem: cifar, width: 8}"])


def test_nothing_outside_training_rebuilds_a_checkpoint_by_hand():
    """Turning a checkpoint into a model is ``training/opening.py``'s job alone: no other module both reads a
    checkpoint and builds or loads a model, and none rebuilds a checkpoint's data spec."""
    builds = re.compile(r"build_prepared_model\(|load_model_state\(|load_weights\(|\brebuild\(")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if path.parent.name != "training" and ("DataSpec(**" in source
                                               or ("load_checkpoint(" in source and builds.search(source))):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, offenders
