"""torchrun (2 gloo processes on CPU), SIGKILL and resume, full disks and read-only folders."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from torchzebra import _io
from torchzebra.cli import main
from torchzebra.training import TrainingError, load_checkpoint, load_trained, train

ZEBRA = ("zebra.enabled=true", "zebra.threshold=0.1")  # on top of the tiny run's settings
# torchrun, SIGKILL and failing runs: several training runs per test, some in subprocesses
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed_faults")]  # the torchrun run once, on one worker
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "torchzebra.cli"]


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_run):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    result = run([sys.executable, "-m", "torchzebra.cli", "train", "--nproc", "2", *tiny_run.args(*ZEBRA),
                  "--run-dir", str(run_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_two_process_training_loads_in_one_process(two_process_run):
    payload = load_checkpoint(two_process_run / "last.pt")
    assert payload.epoch == 1 and not any(key.startswith("module.") for key in payload.model)
    model, _ = load_trained(two_process_run / "last.pt")
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    assert json.loads((two_process_run / "metrics.json").read_text())[0]["epoch"] == 1  # rank 0 wrote once


def test_two_process_evaluation_equals_one_process(two_process_run, tmp_path):
    checkpoint = str(two_process_run / "last.pt")
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["eval", checkpoint, "--quiet", "--json", str(single)]) == 0
    result = run([*TORCHRUN, "eval", checkpoint, "--quiet", "--json", str(double)])
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["images"] == two["images"] == 128
    assert one["accuracy"] == two["accuracy"] and one["bytes"] == two["bytes"]
    assert [layer["nonzero"] for layer in one["layers"]] == [layer["nonzero"] for layer in two["layers"]]


def final_weights(run_dir):
    return load_checkpoint(run_dir / "last.pt").model


@pytest.mark.parametrize("kill_after_epoch", [1, 2])
def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path, kill_after_epoch, tiny_run):
    args = tiny_run.args(*ZEBRA, "train.epochs=3", "data.train_subset=512")  # epochs long enough to be killed in
    straight = tmp_path / "straight"
    assert main(["train", *args, "--run-dir", str(straight)]) == 0
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "torchzebra.cli", "train", *args, "--run-dir", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        checkpoint = killed / "last.pt"
        if checkpoint.exists() and load_checkpoint(checkpoint).epoch >= kill_after_epoch:
            break
        time.sleep(0.05)
    time.sleep(random.Random(kill_after_epoch).uniform(0.0, 0.5))  # somewhere inside the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert load_checkpoint(killed / "last.pt").epoch in (kill_after_epoch, kill_after_epoch + 1)
    assert main(["train", "--run-dir", str(killed), "--resume", "--quiet"]) == 0
    assert not list(killed.glob(".last.pt.*.tmp"))
    resumed, expected = final_weights(killed), final_weights(straight)
    assert resumed.keys() == expected.keys()
    for key in expected:
        assert torch.equal(resumed[key], expected[key]), key


@pytest.mark.parametrize("failure, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
])
def test_a_failed_save_stops_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys, failure, message,
                                                                tiny_run):
    config = tiny_run.config(*ZEBRA, "train.epochs=2")
    run_dir = tmp_path / "run"
    train(config, run_dir, progress=False)
    before = (run_dir / "last.pt").read_bytes()
    real_replace = os.replace

    def failing_replace(source, target):
        if str(target).endswith("last.pt"):
            raise failure
        return real_replace(source, target)

    monkeypatch.setattr(_io.os, "replace", failing_replace)
    config = tiny_run.config(*ZEBRA, "train.epochs=3")
    with pytest.raises(TrainingError, match=f"cannot write checkpoint .*{message}.*previous checkpoint is intact"):
        train(config, run_dir / "again", init=run_dir / "last.pt", progress=False)
    assert (run_dir / "last.pt").read_bytes() == before
    assert not list((run_dir / "again").glob(".last.pt.*"))  # the temporary file is removed
    assert main(["train", *tiny_run.args(*ZEBRA), "--run-dir", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zebra train: training stopped: cannot write checkpoint") and err.count("\n") == 1
