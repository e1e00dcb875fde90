"""Training engine: learning, resume, checkpoints, configs, models."""

import shutil
import subprocess
import sys
from collections import Counter
from unittest import mock

import pytest
import torch
import yaml

from torchzebra.training import (CheckpointError, keep_freed_memory, load_checkpoint, load_trained, save_checkpoint,
                                 train)
from torchzebra.config import ConfigError, load_config
from torchzebra.training import trainer as trainer_module
from torchzebra.training.extensions import Extension
from torchzebra.recipe import distillation_loss
from torchzebra.data import DataSpec
from torchzebra.results import read_result
from torchzebra.models import build_model
from torchzebra import zebra_layers

@pytest.mark.slow  # learns Fashion-MNIST: two epochs of 1,024 images
def test_two_epochs_on_a_subset_beat_chance(tmp_path, tiny_run):
    config = tiny_run.config("data.name=fashion-mnist", "data.train_subset=1024", "data.test_subset=256",
                             "data.batch_size=32", "train.epochs=2")
    result = train(config, tmp_path / "run", progress=False)
    assert result.report.accuracy > 0.3  # ten classes: chance is 0.1
    assert [row["epoch"] for row in result.metrics] == [1, 2]
    for name in ("last.pt", "metrics.csv", "metrics.json", "config.yaml", "report.json", "traffic.csv"):
        assert (tmp_path / "run" / name).is_file(), name
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["train_subset"] == 1024 and saved["train"]["epochs"] == 2
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 3


@pytest.mark.slow  # three runs of two epochs
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, tiny_run):
    config = tiny_run.config("train.epochs=2", "zebra.enabled=true", "zebra.lam=0.05")
    straight = train(config, tmp_path / "straight", progress=False)

    calls = {"n": 0}
    real_evaluate = trainer_module.evaluate

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(trainer_module, "evaluate", real_evaluate)
    resumed = train(config, tmp_path / "resumed", resume=True, progress=False)
    for (key, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), key
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]


def test_fine_tune_with_zebra_from_checkpoint_and_eval_rebuilds(tmp_path, tiny_run):
    base = train(tiny_run.config(), tmp_path / "base", progress=False)
    config = tiny_run.config("zebra.enabled=true", "zebra.threshold=0.2", "zebra.lam=0.1", "zebra.density=null")
    tuned = train(config, tmp_path / "tuned", stage=config.finetune, init=tmp_path / "base" / "last.pt", progress=False)
    assert tuned.report.reduction("zebra") > base.report.reduction("zebra")
    thresholds = [layer.threshold.item() for _, layer in zebra_layers(tuned.model)]
    assert thresholds == [pytest.approx(0.2)] * 17  # not overwritten by the dense checkpoint's
    model, loaded_config = load_trained(tmp_path / "tuned" / "last.pt")
    x = torch.randn(2, 1, 32, 32)
    tuned.model.eval()
    assert torch.equal(model(x), tuned.model.cpu()(x))
    assert loaded_config.zebra.threshold == 0.2


def test_resume_with_other_settings_is_refused(tmp_path, tiny_run):
    train(tiny_run.config(), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="other settings"):
        train(tiny_run.config("train.lr=0.2"), tmp_path / "run", resume=True, progress=False)


def test_resume_a_checkpoint_saved_before_settings_were_added(tmp_path, tiny_run):
    """A run saved by an earlier version (no train.tensorboard / train.compile yet) resumes: new settings
    take their defaults (a changed setting is refused: test_resume_with_other_settings_is_refused)."""
    train(tiny_run.config(), tmp_path / "run", progress=False)
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    for removed in ("tensorboard", "compile"):
        del payload["stage"][removed], payload["config"]["train"][removed]
    save_checkpoint(tmp_path / "run" / "last.pt", payload)
    assert train(tiny_run.config(), tmp_path / "run", resume=True, progress=False).report.images == 128


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, tiny_run):
    train(tiny_run.config(), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    shutil.copy(tmp_path / "run" / "last.pt", tmp_path / "keep.pt")
    with pytest.raises(trainer_module.TrainingError, match=r"loss became non-finite \(nan or inf\) at epoch 1, step 2;"):
        train(tiny_run.config("train.lr=.nan", "train.schedule=constant"), tmp_path / "run",
              progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a torchzebra checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "torchzebra-checkpoint", "evil": shutil.Error("x")}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="refused by torch.load\\(weights_only=True\\)"):
        load_checkpoint(tmp_path / "code.pt")
    save_checkpoint(tmp_path / "ok.pt", {"x": torch.ones(3)})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["x"], torch.ones(3))


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path, tiny_run):
    with pytest.raises(ConfigError, match="train.sync_bn needs GPUs"):
        train(tiny_run.config("train.sync_bn=true"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_checkpoint_of_another_model_lists_keys(tmp_path, tiny_run):
    train(tiny_run.config(), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="does not fit this model .*shape differs: "):
        load_trained(tmp_path / "run" / "last.pt", ["model.options={stem: cifar, width: 8}"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown setting\(s\) in train \['epoch'\]"),
        ("train.epochs=many", "train.epochs='many' is invalid: expected an int"),
        ("data.size=abc", r"data.size='abc' is invalid: expected an int or null"),
        ("zebra.weight=heavy", r"zebra: weight='heavy' is invalid"),
        ("zebra.leaf_modules=3", r"zebra.leaf_modules=3 is invalid: expected a list \(each item a string\)"),
        ("sweep.points=[1]", r"sweep.points=\[1\] is invalid: expected a list \(each item a mapping of a string to any value\)"),
        ("colour=blue", r"unknown setting\(s\) \['colour'\]"),
        ("novalue", "override 'novalue' is invalid: write section.key=value"),
        ("data=[1, 2]", "data must be a mapping"),
        ("zebra.block_size=big", "zebra: block_size='big' is invalid"),
        ("zebra.threshold={'layer1.*': -1}", r"zebra: threshold\['layer1.\*'\]=-1 is invalid"),
        ("zebra.density=1.5", r"zebra: density\['\*'\]=1.5 is invalid"),
        ("zebra.density={'layer4.*': abc}", r"zebra.density=\{.*'layer4.\*': 'abc'.*\} is invalid: expected a number or a mapping of a string to a number"),
        ("zebra.lam_epochs=0.1", r"zebra.lam_epochs=0.1 is invalid: expected a list \(each item a number\) or null"),
        ("finetune.schedule=cosin", "finetune.schedule='cosin' is invalid: use one of onecycle, cosine, constant"),
    ],
)
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", overrides=[override])


def test_per_layer_and_map_values_are_accepted():
    config = load_config("quick", overrides=["zebra.block_size={'layer4.*': map, '*': 4}", "zebra.threshold={'*': 0.1}"])
    assert config.zebra.block_size == {"layer4.*": "map", "*": 4}
    assert load_config("quick", overrides=["zebra.block_size=map"]).zebra.block_size == "map"


def test_presets_and_config_file(tmp_path):
    assert load_config("paper").data.name == "tiny-imagenet"
    with pytest.raises(ConfigError, match="preset 'fast' is unknown"):
        load_config("fast")
    file = tmp_path / "mine.yaml"
    file.write_text("train: {epochs: 7}\nzebra: {lam: 0.5}\n")
    config = load_config("quick", file, ["zebra.lam=0.25"])
    assert (config.train.epochs, config.zebra.lam, config.model.name) == (7, 0.25, "resnet18")
    file.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config("quick", file)


@pytest.mark.parametrize("name, options, channels, size", [
    ("resnet18", {"stem": "imagenet", "width": 8}, 3, 64),
    ("resnet18", {"stem": "cifar", "width": 8}, 1, 32),
    ("resnet20", {}, 3, 32),
    ("resnet56", {"width": 4}, 3, 32),
    ("vgg11", {"width": 16}, 1, 32),
    ("vgg16", {"width": 16}, 3, 32),
    ("torchvision:resnet50", {}, 1, 32),
    ("torchvision:mobilenet_v2", {}, 3, 32),
])
def test_model_zoo(name, options, channels, size):
    model = build_model(name, 7, channels, **options).eval()
    assert model(torch.randn(2, channels, size, size)).shape == (2, 7)


def test_model_zoo_errors():
    with pytest.raises(ValueError, match="model 'resnet19' is unknown"):
        build_model("resnet19", 10, 3)
    with pytest.raises(ValueError, match="torchvision classifiers are"):
        build_model("torchvision:nonsense", 10, 3)
    with pytest.raises(ValueError, match="stem='tiny' is invalid"):
        build_model("resnet18", 10, 3, stem="tiny")


def test_training_with_calibrated_density_prunes_to_the_target(tmp_path, tiny_run):
    """32 steps, calibrated every 4: the last calibrations come where the one-cycle rate has fallen."""
    config = tiny_run.config("zebra.enabled=true", "zebra.density=0.3", "zebra.density_ramp_steps=0",
                             "zebra.calibrate_every=4", "data.length=1024", "data.train_subset=1024", "data.batch_size=32")
    result = train(config, tmp_path / "run", progress=False)
    densities = [row.block_density for row in result.report.layers]
    assert max(densities) < 0.6 and sum(densities) / len(densities) < 0.45


def test_synthetic_throughput_run_with_bf16_and_channels_last(tmp_path):
    config = load_config("paper", overrides=[
        "device=cpu", "data.name=synthetic", "data.size=32", "data.length=64", "data.classes=5", "data.workers=0",
        "data.batch_size=16", "data.eval_batch_size=16", "model.options={stem: imagenet, width: 4}",
        "train.epochs=1", "train.max_steps=2", "zebra.enabled=true", "zebra.lam=0.01",
    ])
    assert config.train.amp and config.train.channels_last
    result = train(config, tmp_path / "run", progress=False)
    assert result.metrics[0]["images_per_s"] > 0 and result.report.images == 16


class Recorder(Extension):
    """Counts its hook calls, adds a constant loss term and a metrics column."""

    name = "recorder"

    def __init__(self, term: float = 100.0) -> None:
        self.calls = Counter()
        self.term = term

    def settings(self):
        return {"term": self.term}

    def before_forward(self, run, inputs):
        self.calls["before_forward"] += 1
        assert run.global_step == run.epoch * run.steps_per_epoch + run.step

    def extra_loss(self, run, inputs, outputs, labels):
        self.calls["extra_loss"] += 1
        return torch.tensor(self.term)

    def after_backward(self, run):
        self.calls["after_backward"] += 1
        assert all(p.grad is not None for p in run.model.parameters() if p.requires_grad)

    def epoch_end(self, run, row):
        row["recorded_steps"] = self.calls["before_forward"]


def test_extensions_hook_into_every_step_and_resume_needs_the_same_ones(tmp_path, tiny_run):
    config = tiny_run.config("zebra.enabled=true", "zebra.lam=0.01")
    recorder = Recorder()
    result = train(config, tmp_path / "run", extensions=[recorder], progress=False)
    steps = result.metrics[0]["recorded_steps"]
    assert steps > 1 and recorder.calls == {"before_forward": steps, "extra_loss": steps, "after_backward": steps}
    assert result.metrics[0]["train_loss"] > 100 and result.metrics[0]["lam"] == 0.01  # Zebra's penalty ran too
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extensions"] == {"recorder": {"term": 100.0}}
    with pytest.raises(CheckpointError, match="other settings"):
        train(config, tmp_path / "run", resume=True, extensions=[Recorder(1.0)], progress=False)
    assert train(config, tmp_path / "run", resume=True, extensions=[Recorder()], progress=False).metrics[0][
        "recorded_steps"] == steps  # finished: the checkpoint's metrics, nothing trained again


def test_a_stage_writes_its_result(tmp_path, tiny_run):
    result = train(tiny_run.config(), tmp_path / "run", progress=False)
    written = read_result(tmp_path / "run" / "report.json")
    assert written.kind == "train" and written.rows[0].traffic == result.report
    assert written.rows[0].folder == tmp_path / "run" and written.rows[0].seconds == pytest.approx(result.seconds)


def test_distillation_loss_is_zero_for_the_teachers_own_logits_and_pulls_towards_them():
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    assert distillation_loss(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, 2.0).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 2]  # gradient descent raises the teacher's favourite class


def test_every_zebra_config_field_is_set_from_the_config(tiny_run):
    config = tiny_run.config("zebra.enabled=true", "zebra.weight={'layer1.*': 2.0}", "zebra.leaf_modules=['layer4']",
                             "zebra.exclude=['stem.*']")
    model = trainer_module.build_prepared_model(config, DataSpec("fashion-mnist", 10, 1, 32), True)
    layers = dict(zebra_layers(model))
    assert layers["layer1.0.relu"].weight == 2.0 and layers["layer2.0.relu"].weight == 1.0
    assert not any(site.startswith("layer4") for site in layers)  # a leaf module is not instrumented
    assert not layers["stem.2"].active and layers["layer1.0.relu"].active


_FAULTS_PER_BATCH = """
import resource, sys, torch
from torchzebra.training import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1)  # a 64 MiB batch tensor, written, then freed
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults)
"""


@pytest.mark.slow  # two Python processes that import torch
def test_keep_freed_memory_spares_the_page_faults_of_every_new_batch():
    """glibc maps each large tensor afresh and the kernel zeroes its pages on first touch, batch after batch; kept
    freed memory is reused: after the first batches, one batch in several at most grows the heap again (the zebra
    command sets it)."""
    runs = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", _FAULTS_PER_BATCH, mode], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[mode] = done.stdout.split()
    if runs["keep"][0] != "True":
        pytest.skip("no glibc mallopt in this C library")
    default_faults, kept_faults = [int(count) for count in runs["default"][1:]], [int(count) for count in runs["keep"][1:]]
    later_default, later_kept = default_faults[2:], kept_faults[2:]
    assert min(later_default) > 0 and sum(later_kept) <= sum(later_default) / 3, (default_faults, kept_faults)


@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "131072"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_malloc_settings_in_the_environment_win(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with mock.patch("ctypes.CDLL") as libc:
        assert keep_freed_memory() is False
    libc.assert_not_called()
