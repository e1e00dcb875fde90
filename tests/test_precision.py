"""The training precision and memory format: auto from the device's native bf16, explicit settings as given,
evaluation always in float32 and the plain layout; and the pieces of a cheap Zebra step (layout-keeping penalty
gradient, the teacher in inference mode, the last step's recalibration)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import yaml
from torch import nn

import torchzebra as tz
from torchzebra.config import load_config
from torchzebra.core import penalty as penalty_module
from torchzebra.recipe import Distiller, ZebraRecipe
from torchzebra.results import read_result
from torchzebra.training import load_checkpoint, precision, train
from torchzebra.training.extensions import Extension


class StepProbe(Extension):
    """Records, at the first training step, whether autocast is on and whether the inputs are channels_last."""

    name = "probe"
    changes_results = False

    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []

    def extra_loss(self, run, inputs, outputs, labels):
        if not self.seen:
            self.seen.append((torch.is_autocast_enabled("cpu"),
                              inputs.is_contiguous(memory_format=torch.channels_last) and not inputs.is_contiguous()))
        return None


def _train_with(tiny_run, tmp_path, native: str | None, *settings: str):
    probe = StepProbe()
    with mock.patch.object(precision, "native_bf16", lambda device: native):
        result = train(tiny_run.config("data.channels=3", *settings), tmp_path / "run", extensions=[probe],
                       progress=False)
    return result, probe.seen[0]


def test_a_cpu_without_native_bf16_trains_in_fp32_and_the_plain_layout_as_before(tiny_run, tmp_path):
    result, (autocast, channels_last) = _train_with(tiny_run, tmp_path, None)
    assert (autocast, channels_last) == (False, False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["precision"] == "fp32" and saved["train"]["channels_last"] is False
    assert read_result(tmp_path / "run" / "report.json").info.machine.training.startswith("fp32, contiguous")


def test_auto_trains_in_bf16_and_channels_last_where_bf16_is_native_and_evaluates_as_deployed(tiny_run, tmp_path):
    result, (autocast, channels_last) = _train_with(tiny_run, tmp_path, "AVX512_BF16")
    assert (autocast, channels_last) == (True, True)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["precision"] == "bf16" and saved["train"]["channels_last"] is True
    machine = read_result(tmp_path / "run" / "report.json").info.machine
    assert machine.training == "bf16 autocast, channels_last (native bf16: AVX512_BF16)"
    weights = [p for p in result.model.parameters() if p.dim() == 4]
    assert all(w.is_contiguous() for w in weights)  # evaluated and saved in the plain layout


def test_explicit_settings_win_over_the_device(tiny_run, tmp_path):
    _, seen = _train_with(tiny_run, tmp_path, "AMX", "train.precision=fp32", "train.channels_last=true")
    assert seen == (False, True)


def test_a_resume_compares_the_resolved_choice(tiny_run, tmp_path):
    """A run trained in fp32 on a machine without bf16 is not resumed in bf16 elsewhere without a word."""
    _train_with(tiny_run, tmp_path, None)
    with pytest.raises(Exception, match="precision='fp32' \\(here 'bf16'\\)"):
        with mock.patch.object(precision, "native_bf16", lambda device: "AMX"):
            train(tiny_run.config("data.channels=3", "train.epochs=2"), tmp_path / "run", resume=True, progress=False)


def test_an_invalid_precision_is_refused_in_one_line(tiny_run):
    with pytest.raises(Exception, match="train.precision='fp16' is invalid: expected 'auto' or 'fp32' or 'bf16'"):
        tiny_run.config("train.precision=fp16")


def test_the_penalty_gradient_of_a_channels_last_map_keeps_its_layout():
    x = torch.rand(2, 3, 4, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    penalty_module.block_penalty(x, 2, "l1", nonnegative=True).backward()
    plain = x.detach().clone().requires_grad_()
    plain.mean().backward()
    assert torch.equal(x.grad, plain.grad) and x.grad.is_contiguous(memory_format=torch.channels_last)


def test_the_teacher_runs_in_the_inputs_layout_and_gives_the_logits_of_a_plain_forward():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = teacher(x)
    distiller = Distiller(teacher)
    student = want.clone().requires_grad_()
    loss = distiller(x.contiguous(memory_format=torch.channels_last), student)
    loss.backward()  # the teacher's logits left inference mode: they can be saved for the student's backward
    assert teacher[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


def test_a_training_shorter_than_calibrate_every_still_ends_at_its_schedule_density():
    """16 steps, recalibration every 20: the last step recalibrates, to the ramp's target at that step."""
    model = tz.prepare(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()), tz.ZebraConfig(block_size=2))
    recipe = ZebraRecipe(model, density=0.5, density_ramp_steps=400, calibrate_every=20,
                         steps_per_epoch=16, total_steps=16)
    targets = []
    with mock.patch("torchzebra.recipe.calibrate", lambda model, batches, density: targets.append(density)):
        for _ in range(16):
            recipe.step(torch.rand(2, 3, 16, 16))
    assert targets == [1.0, recipe.target_density(15)] and targets[-1] < 0.95


def test_eval_every_zero_evaluates_after_the_last_epoch_only_and_trains_alike(tiny_run, tmp_path):
    """Skipping the test split between epochs changes what is logged, never the model."""
    every = train(tiny_run.config("train.epochs=2"), tmp_path / "every", progress=False)
    last = train(tiny_run.config("train.epochs=2", "train.eval_every=0"), tmp_path / "last", progress=False)
    assert "test_acc" in every.metrics[0] and "test_acc" not in last.metrics[0]
    assert last.metrics[1]["test_acc"] == every.metrics[1]["test_acc"]
    assert all(torch.equal(a, b) for a, b in zip(every.model.state_dict().values(), last.model.state_dict().values()))
    assert "test_acc" in (tmp_path / "last" / "metrics.csv").read_text().splitlines()[0]


def _layout(tensors: list[torch.Tensor]) -> str:
    """``channels_last`` or ``contiguous`` where every tensor is laid out so and one at least in that layout alone
    (a 1x1 kernel or a single input channel fits both), else ``mixed``."""
    for name, layout, other in (("channels_last", torch.channels_last, torch.contiguous_format),
                                ("contiguous", torch.contiguous_format, torch.channels_last)):
        if (all(t.is_contiguous(memory_format=layout) for t in tensors)
                and any(not t.is_contiguous(memory_format=other) for t in tensors)):
            return name
    return "mixed"


class LayoutProbe(Extension):
    """Records, at every training step, whether autocast is on, the logits' dtype (bf16 where autocast ran the
    model) and the layouts of the inputs and of the model's conv weights."""

    name = "layout-probe"
    changes_results = False

    def __init__(self) -> None:
        self.steps: list[tuple[bool, torch.dtype, str, str]] = []

    def extra_loss(self, run, inputs, outputs, labels):
        weights = [p for p in run.model.parameters() if p.dim() == 4]
        self.steps.append((torch.is_autocast_enabled(run.device.type), outputs.dtype, _layout([inputs]),
                           _layout(weights)))
        return None


@pytest.mark.parametrize("precision, channels_last, logits, layout, training", [
    ("bf16", True, torch.bfloat16, "channels_last", "bf16 autocast, channels_last (as configured)"),
    ("fp32", False, torch.float32, "contiguous", "fp32, contiguous (as configured)"),
], ids=["bf16-channels_last", "fp32-contiguous"])
def test_synthetic_throughput_run_trains_in_the_precision_and_layout_asked_for(tmp_path, precision, channels_last,
                                                                               logits, layout, training):
    """The paper preset's run on synthetic data: every step runs in the precision and memory format set (autocast
    on and bf16 logits, inputs and conv weights channels_last; or neither), and the config, the checkpoint and the
    report say so. What it checks holds however long a step takes."""
    config = load_config("paper", overrides=[
        "device=cpu", "data.name=synthetic", "data.size=32", "data.length=64", "data.classes=5", "data.workers=0",
        "data.batch_size=16", "data.eval_batch_size=16", "model.options={stem: imagenet, width: 4}",
        "train.epochs=1", "train.max_steps=2", "zebra.enabled=true", "zebra.lam=0.01",
        f"train.precision={precision}", f"train.channels_last={str(channels_last).lower()}",
    ])
    assert (config.train.precision, config.train.channels_last) == (precision, channels_last)
    probe = LayoutProbe()
    result = train(config, tmp_path / "run", extensions=[probe], progress=False)
    assert result.metrics[0]["images_per_s"] > 0 and result.report.images == 16
    assert probe.steps == [(precision == "bf16", logits, layout, layout)] * 2  # train.max_steps=2
    assert _layout([p for p in result.model.parameters() if p.dim() == 4]) == "contiguous"  # evaluated as deployed
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert (saved["precision"], saved["channels_last"]) == (precision, channels_last)
    optim = load_checkpoint(tmp_path / "run" / "last.pt").optim
    assert (optim["precision"], optim["channels_last"]) == (precision, channels_last)
    assert read_result(tmp_path / "run" / "report.json").info.machine.training == training
