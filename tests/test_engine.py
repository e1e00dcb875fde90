"""Training engine: learning, resume, checkpoints, configs, models."""

import contextlib
import csv
import dataclasses
import io
import json
import shutil
import subprocess
import sys
from unittest import mock

import pytest
import torch
import yaml

from torchzebra.training import (Checkpoint, CheckpointError, keep_freed_memory, load_checkpoint, load_trained,
                                 save_checkpoint, train)
from torchzebra.config import ConfigError, load_config
from torchzebra.errors import ZebraError
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

    with pytest.raises(KeyboardInterrupt), interrupted_in_epoch_two(monkeypatch):
        train(config, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt").epoch == 1
    resumed = train(config, tmp_path / "resumed", resume=True, progress=False)
    for (key, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), key
    assert [r["epoch"] for r in resumed.metrics] == [1, 2]


@contextlib.contextmanager
def interrupted_in_epoch_two(monkeypatch):
    """A training inside stops with KeyboardInterrupt at its second evaluation (epoch two); evaluation is real again
    afterwards."""
    real_evaluate = trainer_module.evaluate
    calls = {"n": 0}

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", interrupt_in_epoch_two)
    try:
        yield
    finally:
        monkeypatch.setattr(trainer_module, "evaluate", real_evaluate)


def test_fine_tune_with_zebra_from_checkpoint_and_eval_rebuilds(tmp_path, tiny_run):
    base = train(tiny_run.config(), tmp_path / "base", progress=False)
    config = tiny_run.config("zebra.enabled=true", "zebra.threshold=0.2", "zebra.lam=0.1", "zebra.density=null")
    tuned = train(config, tmp_path / "tuned", optim=config.finetune, init=tmp_path / "base" / "last.pt", progress=False)
    assert tuned.report.reduction("zebra") > base.report.reduction("zebra")
    thresholds = [layer.threshold.item() for _, layer in zebra_layers(tuned.model)]
    assert thresholds == [pytest.approx(0.2)] * 17  # not overwritten by the dense checkpoint's
    model, loaded_config = load_trained(tmp_path / "tuned" / "last.pt")
    x = torch.randn(2, 1, 32, 32)
    tuned.model.eval()
    assert torch.equal(model(x), tuned.model.cpu()(x))
    assert loaded_config.zebra.threshold == 0.2


def test_a_finished_baseline_is_reused_under_new_zebra_settings_and_a_zebra_stage_is_not(tmp_path, tiny_run):
    dense = train(tiny_run.config(), tmp_path / "base", progress=False)
    changed = tiny_run.config("zebra.density=0.3", "zebra.lam=0.5", "zebra.block_size=4")
    reused = train(changed, tmp_path / "base", resume=True, progress=False)  # nothing left to train: measured again
    assert reused.metrics == dense.metrics
    assert {layer.block_size for layer in reused.report.layers} == {4}
    masked = tiny_run.config("zebra.enabled=true", "zebra.lam=0.05")
    train(masked, tmp_path / "zebra", progress=False)
    with pytest.raises(CheckpointError, match=r"other settings: zebra\.lam=0\.05 \(here 0\.5\)"):
        train(tiny_run.config("zebra.enabled=true", "zebra.lam=0.5"), tmp_path / "zebra", resume=True, progress=False)


def test_resume_with_other_settings_is_refused_naming_them(tmp_path, tiny_run):
    train(tiny_run.config(), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match=r"other settings: train\.lr=0\.1 \(here 0\.2\); optim\.lr=0\.1 \(here "
                                              r"0\.2\); resume with the same settings"):
        train(tiny_run.config("train.lr=0.2"), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(CheckpointError, match=r"other settings: zebra\.leaf_modules=\[\] \(here \['layer4'\]\)"):
        train(tiny_run.config("zebra.leaf_modules=[layer4]"), tmp_path / "run", resume=True, progress=False)
    (tmp_path / "pruned").mkdir()  # a checkpoint without training state, as zebra prune and calibrate write
    save_checkpoint(tmp_path / "pruned" / "last.pt", dataclasses.replace(load_checkpoint(tmp_path / "run" / "last.pt"),
                                                                         optimizer=None))
    with pytest.raises(CheckpointError, match="holds no training state .* with --init instead of --resume"):
        train(tiny_run.config(), tmp_path / "pruned", resume=True, progress=False)


def test_resume_with_settings_that_cannot_change_results_is_accepted(tmp_path, tiny_run):
    """device, data.workers and train.tensorboard say how a run executes and logs, not what it trains."""
    train(tiny_run.config(), tmp_path / "run", progress=False)
    other = tiny_run.config("device=auto", "data.workers=1", "train.tensorboard=true")
    assert train(other, tmp_path / "run", resume=True, progress=False).metrics == load_checkpoint(
        tmp_path / "run" / "last.pt").metrics  # finished: nothing trained again
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["workers"] == 1


def test_resume_a_checkpoint_of_the_first_version(tmp_path, tiny_run):
    """A version-1 checkpoint (the Zebra flag saved as "zebra", the optimiser settings as "stage", no
    train.tensorboard / train.compile yet, the Slimming weight alone) resumes: new settings take their defaults."""
    train(tiny_run.config(), tmp_path / "run", progress=False)
    payload = load_checkpoint(tmp_path / "run" / "last.pt").to_dict()
    payload.update(version=1, zebra=payload.pop("masked"), stage=payload.pop("optim"), sparsity=0.0)
    for removed in ("extensions", "extension_state", "derived_from", "plan"):
        del payload[removed]
    for removed in ("tensorboard", "compile"):
        del payload["stage"][removed], payload["config"]["train"][removed]
    torch.save(payload, tmp_path / "run" / "last.pt")
    old = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (old.masked, old.optim["epochs"], old.extensions, old.epoch) == (False, 1, {}, 1)
    assert train(tiny_run.config(), tmp_path / "run", resume=True, progress=False).report.images == 128


def test_the_checkpoint_payload_round_trips(tmp_path):
    saved = Checkpoint({"w": torch.arange(3.0)}, {"seed": 1}, {"name": "synthetic", "classes": 3, "channels": 1,
                       "size": 8}, masked=True, structure={"bn": 2}, optim={"epochs": 2}, epoch=1,
                       metrics=[{"epoch": 1}], extensions={"x": {"a": 1}}, extension_state={"x": {"n": torch.ones(2)}},
                       derived_from="a.pt")
    save_checkpoint(tmp_path / "c.pt", saved)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.to_dict().keys() == saved.to_dict().keys() and loaded.to_dict()["version"] == 2
    assert torch.equal(loaded.model["w"], saved.model["w"])
    assert torch.equal(loaded.extension_state["x"]["n"], torch.ones(2))
    assert (loaded.config, loaded.spec, loaded.masked, loaded.structure, loaded.optim, loaded.epoch, loaded.metrics,
            loaded.extensions, loaded.derived_from, loaded.plan) == (saved.config, saved.spec, True, {"bn": 2},
                                                                     {"epochs": 2}, 1, [{"epoch": 1}], {"x": {"a": 1}},
                                                                     "a.pt", None)
    torch.save({"format": "torchzebra-checkpoint", "version": 2, "model": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare.pt lacks config, spec; give a last.pt written by zebra train"):
        load_checkpoint(tmp_path / "bare.pt")
    torch.save({"format": "torchzebra-checkpoint", "version": 3}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="has checkpoint version 3, this torchzebra reads 1 to 2"):
        load_checkpoint(tmp_path / "new.pt")


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, tiny_run):
    train(tiny_run.config(), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    shutil.copy(tmp_path / "run" / "last.pt", tmp_path / "keep.pt")
    with pytest.raises(trainer_module.TrainingError,
                       match=r"loss became non-finite \(nan or inf\) at epoch 1, step 2;"):
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
    save_checkpoint(tmp_path / "ok.pt", Checkpoint({"x": torch.ones(3)}, {}, {}))
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt").model["x"], torch.ones(3))


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
        ("sweep.points=[1]",
         r"sweep.points=\[1\] is invalid: expected a list \(each item a mapping of a string to any value\)"),
        ("colour=blue", r"unknown setting\(s\) \['colour'\]"),
        ("novalue", "override 'novalue' is invalid: write section.key=value"),
        ("data=[1, 2]", "data must be a mapping"),
        ("zebra.block_size=big", "zebra: block_size='big' is invalid"),
        ("zebra.threshold={'layer1.*': -1}", r"zebra: threshold\['layer1.\*'\]=-1 is invalid"),
        ("zebra.density=1.5", r"zebra: density\['\*'\]=1.5 is invalid"),
        ("zebra.density={'layer4.*': abc}",
         r"zebra.density=\{.*'layer4.\*': 'abc'.*\} is invalid: "
         r"expected a finite number or a mapping of a string to a finite number"),
        ("zebra.lam_epochs=0.1",
         r"zebra.lam_epochs=0.1 is invalid: expected a list \(each item a finite number\) or null"),
        ("finetune.schedule=cosin", "finetune.schedule='cosin' is invalid: use one of onecycle, cosine, constant"),
    ],
)
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", overrides=[override])


def test_per_layer_and_map_values_are_accepted():
    config = load_config("quick",
                         overrides=["zebra.block_size={'layer4.*': map, '*': 4}", "zebra.threshold={'*': 0.1}"])
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
                             "zebra.calibrate_every=4", "data.length=1024", "data.train_subset=1024",
                             "data.batch_size=32")
    result = train(config, tmp_path / "run", progress=False)
    densities = [row.block_density for row in result.report.layers]
    assert max(densities) < 0.6 and sum(densities) / len(densities) < 0.45


def test_synthetic_throughput_run_with_bf16_and_channels_last(tmp_path):
    config = load_config("paper", overrides=[
        "device=cpu", "data.name=synthetic", "data.size=32", "data.length=64", "data.classes=5", "data.workers=0",
        "data.batch_size=16", "data.eval_batch_size=16", "model.options={stem: imagenet, width: 4}",
        "train.epochs=1", "train.max_steps=2", "zebra.enabled=true", "zebra.lam=0.01",
    ])
    assert config.train.precision == "bf16" and config.train.channels_last is True
    result = train(config, tmp_path / "run", progress=False)
    assert result.metrics[0]["images_per_s"] > 0 and result.report.images == 16


class Recorder(Extension):
    """Records its hooks in order, checking what the loop has done by each; adds a constant loss term and a column."""

    name = "recorder"

    def __init__(self, term: float = 100.0) -> None:
        self.calls = []
        self.term = term

    def settings(self):
        return {"term": self.term}

    def train_start(self, run):
        self.calls.append("train_start")

    def before_forward(self, run, inputs):
        self.calls.append("before_forward")
        assert run.global_step == run.epoch * run.steps_per_epoch + run.step

    def extra_loss(self, run, inputs, outputs, labels):
        self.calls.append("extra_loss")
        return torch.tensor(self.term)

    def after_backward(self, run):
        self.calls.append("after_backward")
        assert all(p.grad is not None for p in run.model.parameters() if p.requires_grad)

    def after_optimizer_step(self, run):
        self.calls.append("after_optimizer_step")
        assert run.scheduler.last_epoch == run.global_step + 1  # the optimiser and the schedule have stepped

    def epoch_end(self, run, row):
        self.calls.append("epoch_end")
        assert "test_acc" not in row  # before the evaluation
        row["recorded_steps"] = self.calls.count("before_forward")

    def after_evaluation(self, run, row, report):
        self.calls.append("after_evaluation")
        assert row is run.metrics[-1] and row["test_acc"] == report.accuracy

    def train_end(self, run, report):
        self.calls.append("train_end")
        assert report.images == 128


def test_extensions_hooks_are_called_in_order_and_resume_needs_the_same_ones(tmp_path, tiny_run):
    config = tiny_run.config("zebra.enabled=true", "zebra.lam=0.01")
    recorder = Recorder()
    result = train(config, tmp_path / "run", extensions=[recorder], progress=False)
    steps = result.metrics[0]["recorded_steps"]
    step = ["before_forward", "extra_loss", "after_backward", "after_optimizer_step"]
    assert steps > 1 and recorder.calls == ["train_start", *step * steps, "epoch_end", "after_evaluation", "train_end"]
    assert result.metrics[0]["train_loss"] > 100 and result.metrics[0]["lam"] == 0.01  # Zebra's penalty ran too
    assert load_checkpoint(tmp_path / "run" / "last.pt").extensions == {"recorder": {"term": 100.0}}
    with pytest.raises(CheckpointError, match=r"other settings: extension recorder=\{'term': 100.0\} \(here "
                                              r"\{'term': 1.0\}\)"):
        train(config, tmp_path / "run", resume=True, extensions=[Recorder(1.0)], progress=False)
    again = Recorder()
    assert train(config, tmp_path / "run", resume=True, extensions=[again], progress=False).metrics[0][
        "recorded_steps"] == steps  # finished: the checkpoint's metrics, nothing trained again
    assert again.calls == ["train_start", "train_end"]
    with pytest.raises(ZebraError, match="two training extensions are named 'recorder'"):
        train(config, tmp_path / "other", extensions=[Recorder(), Recorder()], progress=False)


class WeightAverage(Extension):
    """A stateful toy extension: the running mean of the weights after every optimiser step."""

    name = "average"

    def __init__(self) -> None:
        self.average, self.updates = None, 0

    def state_dict(self):
        return {"average": self.average, "updates": self.updates}

    def load_state_dict(self, state):
        self.average, self.updates = {k: v.clone() for k, v in state["average"].items()}, state["updates"]

    def train_start(self, run):
        if self.average is None:  # a fresh run (a resumed one has its state back already)
            self.average = {k: v.detach().clone() for k, v in run.model.named_parameters()}

    def after_optimizer_step(self, run):
        self.updates += 1
        for k, v in run.model.named_parameters():
            self.average[k].lerp_(v.detach(), 1 / (self.updates + 1))

    def epoch_end(self, run, row):
        row["averaged"] = self.updates


def test_a_stateful_extension_resumes_exactly(tmp_path, monkeypatch, tiny_run):
    """Killed after its first epoch and resumed, a run's extension continues from its saved state: its average
    equals an uninterrupted run's. The loggers write every row, the resumed ones too, as the run holds them."""
    config = tiny_run.config("train.epochs=2")
    straight = WeightAverage()
    train(config, tmp_path / "straight", extensions=[straight], progress=False)
    with pytest.raises(KeyboardInterrupt), interrupted_in_epoch_two(monkeypatch):
        train(config, tmp_path / "resumed", extensions=[WeightAverage()], progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt").extension_state["average"]["updates"] == 4
    resumed = WeightAverage()
    result = train(config, tmp_path / "resumed", resume=True, extensions=[resumed], progress=False)
    assert resumed.updates == straight.updates == 8
    for key, value in straight.average.items():
        assert torch.equal(value, resumed.average[key]), key
    assert [row["averaged"] for row in result.metrics] == [4, 8]
    assert (tmp_path / "resumed" / "metrics.json").read_text() == json.dumps(result.metrics, indent=2)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(result.metrics[-1]))
    writer.writeheader()
    writer.writerows(result.metrics)
    assert (tmp_path / "resumed" / "metrics.csv").read_bytes() == out.getvalue().encode()


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
        done = subprocess.run([sys.executable, "-c", _FAULTS_PER_BATCH, mode], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[mode] = done.stdout.split()
    if runs["keep"][0] != "True":
        pytest.skip("no glibc mallopt in this C library")
    default_faults = [int(count) for count in runs["default"][1:]]
    kept_faults = [int(count) for count in runs["keep"][1:]]
    later_default, later_kept = default_faults[2:], kept_faults[2:]
    assert min(later_default) > 0 and sum(later_kept) <= sum(later_default) / 3, (default_faults, kept_faults)


@pytest.mark.parametrize("name, value", [("MALLOC_TRIM_THRESHOLD_", "131072"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_malloc_settings_in_the_environment_win(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with mock.patch("ctypes.CDLL") as libc:
        assert keep_freed_memory() is False
    libc.assert_not_called()
