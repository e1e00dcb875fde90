"""A new method is one registry entry and its extension class: registered here, it is trained by ``zebra sweep``
with its extension, and reported under its title, without a change anywhere else."""

from __future__ import annotations

import json

import pytest

from torchzebra.cli import main
from torchzebra.results import CHECKPOINT, METHODS, Method, register_method
from torchzebra.training import load_checkpoint
from torchzebra.training.extensions import Extension

WEIGHT = 0.01


class LogitL2(Extension):
    """A toy method's work: ``weight * mean(logits^2)`` added to the task loss; its mean value per epoch is logged."""

    name = "logit_l2"

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.values: list[float] = []

    def settings(self):
        return {"weight": self.weight}

    def extra_loss(self, run, inputs, outputs, labels):
        penalty = outputs.float().pow(2).mean()
        self.values.append(float(penalty.detach()))
        return self.weight * penalty

    def epoch_end(self, run, row):
        row["logit_l2"] = sum(self.values) / len(self.values)
        self.values.clear()


@pytest.fixture
def logit_l2():
    """The toy method, registered for one test: fine-tuned from the baseline, no Zebra masks, its own extension."""
    method = register_method(Method("logit-l2", "L2 logit penalty", "#17becf", "baseline", False,
                                    "the baseline fine-tuned with an L2 penalty on its logits",
                                    extensions=lambda config: [LogitL2(WEIGHT)]))
    yield method
    del METHODS[method.name]


def test_a_registered_method_is_swept_with_its_extension_and_reported(logit_l2, tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["sweep", *tiny_run.args(), "--methods", "logit-l2", "--run-dir", str(run_dir)]) == 0
    rows = json.loads((run_dir / "sweep.json").read_text())["rows"]
    assert [(row["method"], row["label"]) for row in rows] == [("dense", "dense"), ("logit-l2", "logit-l2")]
    payload = load_checkpoint(run_dir / "points" / "logit-l2" / CHECKPOINT)
    assert payload.extensions["logit_l2"] == {"weight": WEIGHT} and payload.masked is False
    assert payload.optim["epochs"] == tiny_run.config().finetune.epochs  # started from the baseline: finetune
    assert all(row["logit_l2"] > 0 for row in payload.metrics)  # the extension's loss ran every epoch
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report"), "--no-pictures"]) == 0
    assert "L2 logit penalty" in (tmp_path / "report" / "report.html").read_text()


def test_an_unregistered_method_is_refused(tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", *tiny_run.args(), "--methods", "logit-l2", "--run-dir", str(tmp_path / "run")])
    assert "invalid choice: 'logit-l2'" in capsys.readouterr().err
    assert main(["sweep", *tiny_run.args(), "--set", "sweep.methods=[logit-l2]", "--run-dir", str(tmp_path / "b")]) == 2
    assert "sweep.methods=['logit-l2'] is invalid" in capsys.readouterr().err

