"""Training extensions: the hooks in order, their settings compared on resume, and their state resumed exactly."""

import csv
import io
import json
from types import SimpleNamespace

import pytest
import torch
from fixtures import fashion_mnist_tree, interrupted_in_epoch_two

import torchzebra as tz
from torchzebra.config import ConfigError
from torchzebra.errors import ZebraError
from torchzebra.training import CheckpointError, load_checkpoint, train
from torchzebra.training.building import build_data
from torchzebra.training.extensions import Extension, distillation, folded


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


class Teacher(torch.nn.Module):
    """A fixed linear teacher over the images that counts the images its forward sees."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(32 * 32, 10)
        self.images = 0

    def forward(self, images):
        self.images += len(images)
        return self.linear(images.flatten(1))


@pytest.mark.parametrize("loader", ["device", "workers"])
def test_cached_targets_are_the_teachers_logits_of_each_batchs_images_unaugmented(tmp_path, tiny_run, loader):
    root = fashion_mnist_tree(tmp_path, train=300, test=10)  # real images, augmented for training
    config = tiny_run.config("data.name=fashion-mnist", f"data.root={root}", "data.test_subset=null",
                             "data.train_subset=256", f"data.loader={loader}", "distill.weight=1",
                             "distill.targets=cached")  # a subset: the table's rows are the subset's items
    torch.manual_seed(0)
    teacher = Teacher()
    (extension,) = distillation(config, teacher)
    assert extension.needs_index and extension.settings() == {"weight": 1.0, "temperature": 4.0, "targets": "cached"}
    indices, inputs_seen, targets = [], [], []
    real_loss = extension.distiller.loss

    def recording_loss(outputs, target):
        targets.append(target)
        return real_loss(outputs, target)

    class Watch(Extension):
        name = "watch"

        def before_forward(self, run, inputs):
            indices.append(run.batch_index)
            inputs_seen.append(inputs)

    extension.distiller.loss = recording_loss
    train(config, tmp_path / "run", masked=True, extensions=[Watch(), extension], progress=False)
    plain = build_data(config, augment=False)[0]
    assert teacher.images == len(plain) == 256  # one pass over the training set, none in the steps
    assert len(indices) == len(targets) == 4  # 256 images in batches of 64
    augmented = []
    with torch.no_grad():
        for index, inputs, target in zip(indices, inputs_seen, targets):
            images = torch.stack([plain[i][0] for i in index.tolist()])
            torch.testing.assert_close(target, teacher.linear(images.flatten(1)), rtol=2e-2, atol=2e-2)  # bf16
            augmented.append(not torch.equal(inputs, images))
    assert any(augmented)  # the student saw augmented views of those images
    assert sorted(torch.cat(indices).tolist()) == list(range(256))  # each item once


def test_the_distill_targets_setting_is_checked_and_batch_targets_run_the_teacher_in_each_step(tmp_path, tiny_run):
    with pytest.raises(ConfigError, match=r"distill.targets='epoch' is invalid: use one of batch, cached"):
        tiny_run.config("distill.targets=epoch")
    config = tiny_run.config("distill.weight=1")
    teacher = Teacher()
    (extension,) = distillation(config, teacher)
    assert not extension.needs_index and extension.settings() == {"weight": 1.0, "temperature": 4.0}
    train(config, tmp_path / "run", masked=True, extensions=[extension], progress=False)
    assert teacher.images == 256  # the four training batches
    (cached,) = distillation(tiny_run.config("distill.weight=1", "distill.targets=cached"), teacher)
    outputs = torch.zeros(2, 10)
    with pytest.raises(ZebraError, match="cached distillation targets need their table, made when training starts"):
        cached.extra_loss(SimpleNamespace(batch_index=torch.arange(2)), torch.zeros(2, 1, 32, 32), outputs, None)
    assert teacher.images == 256  # never the teacher in place of the table


def test_the_cache_pass_folds_batchnorm_into_the_convolutions_or_runs_an_untraceable_teacher_as_it_is():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.LazyLinear(3))
    images = torch.randn(8, 1, 6, 6)
    net(images)  # the lazy layer takes its shape; BatchNorm learns running statistics
    net.eval()
    fast = folded(net)
    assert fast is not net and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    torch.testing.assert_close(fast(images), net(images), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the teacher itself is left as it was
    untraceable = Teacher()  # len() of its input: torch.fx cannot trace it
    with pytest.warns(UserWarning, match="torch.fx cannot trace the teacher"):
        assert folded(untraceable) is untraceable


def test_a_prepared_teacher_runs_as_its_plain_model(tiny_run):
    """zebra run and zebra sweep hand over the baseline as trained (prepared): its inactive Zebra layers would only
    cost time in every step's teacher forward."""
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    plain(torch.randn(1, 1, 6, 6))
    (extension,) = distillation(tiny_run.config("distill.weight=1"), tz.prepare(plain))
    assert extension.distiller.teacher is plain
