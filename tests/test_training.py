"""The training loop: learning, fine-tuning from a checkpoint, resuming (and what a resume refuses), stopping on a
non-finite loss, what a stage writes, and the prepared model a run config builds."""

import dataclasses
import shutil

import pytest
import torch
import yaml
from fixtures import interrupted_in_epoch_two

from torchzebra import zebra_layers
from torchzebra.config import ConfigError
from torchzebra.data import DataSpec
from torchzebra.results import read_result
from torchzebra.training import CheckpointError, load_checkpoint, load_trained, save_checkpoint, train
from torchzebra.training import trainer as trainer_module


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
    changed = tiny_run.config("zebra.density=0.3", "zebra.lam=0.5", "zebra.block_size=4", "finetune.lr=0.02",
                              "distill.weight=0.5")  # none of them shapes a dense baseline
    timed = load_checkpoint(tmp_path / "base" / "last.pt")  # its epochs as if each had taken 1,000 s
    save_checkpoint(tmp_path / "base" / "last.pt", dataclasses.replace(
        timed, metrics=[{**row, "seconds": 1000.0} for row in timed.metrics]))
    reused = train(changed, tmp_path / "base", resume=True, progress=False)  # nothing left to train: measured again
    assert [{**row, "seconds": 0} for row in reused.metrics] == [{**row, "seconds": 0} for row in dense.metrics]
    assert 1000.0 * len(dense.metrics) < reused.seconds < 1000.0 * len(dense.metrics) + 60  # its training time
    assert read_result(tmp_path / "base" / "report.json").rows[0].seconds == reused.seconds
    with pytest.raises(CheckpointError, match=r"other settings: finetune\.lr=0\.1 \(here 0\.02\)"):
        train(changed, tmp_path / "base", init=tmp_path / "base" / "last.pt", resume=True, progress=False)
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


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, tiny_run):
    train(tiny_run.config(), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    shutil.copy(tmp_path / "run" / "last.pt", tmp_path / "keep.pt")
    with pytest.raises(trainer_module.TrainingError,
                       match=r"loss became non-finite \(nan or inf\) at epoch 1, step 2;"):
        config = tiny_run.config("train.schedule=constant")  # a NaN rate, past the config's own check
        train(dataclasses.replace(config, train=dataclasses.replace(config.train, lr=float("nan"))), tmp_path / "run",
              progress=False)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path, tiny_run):
    with pytest.raises(ConfigError, match="train.sync_bn needs GPUs"):
        train(tiny_run.config("train.sync_bn=true"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_training_with_calibrated_density_prunes_to_the_target(tmp_path, tiny_run):
    """32 steps, calibrated every 4: the last calibrations come where the one-cycle rate has fallen."""
    config = tiny_run.config("zebra.enabled=true", "zebra.density=0.3", "zebra.density_ramp_steps=0",
                             "zebra.calibrate_every=4", "data.length=1024", "data.train_subset=1024",
                             "data.batch_size=32")
    result = train(config, tmp_path / "run", progress=False)
    densities = [row.block_density for row in result.report.layers]
    assert max(densities) < 0.6 and sum(densities) / len(densities) < 0.45


def test_a_stage_writes_its_result(tmp_path, tiny_run):
    result = train(tiny_run.config(), tmp_path / "run", progress=False)
    written = read_result(tmp_path / "run" / "report.json")
    assert written.kind == "train" and written.rows[0].traffic == result.report
    assert written.rows[0].folder == tmp_path / "run" and written.rows[0].seconds == pytest.approx(result.seconds)


def test_every_zebra_config_field_is_set_from_the_config(tiny_run):
    config = tiny_run.config("zebra.enabled=true", "zebra.weight={'layer1.*': 2.0}", "zebra.leaf_modules=['layer4']",
                             "zebra.exclude=['stem.*']")
    model = trainer_module.build_prepared_model(config, DataSpec("fashion-mnist", 10, 1, 32), True)
    layers = dict(zebra_layers(model))
    assert layers["layer1.0.relu"].weight == 2.0 and layers["layer2.0.relu"].weight == 1.0
    assert not any(site.startswith("layer4") for site in layers)  # a leaf module is not instrumented
    assert not layers["stem.2"].active and layers["layer1.0.relu"].active
