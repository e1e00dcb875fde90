"""The zebra CLI: help, overrides, the train -> eval path and one-line errors."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from torchzebra import cli
from torchzebra.cli import main, verbs

VERBS = ["train", "eval", "run", "slim", "prune", "calibrate", "export", "estimate", "import", "sweep", "report"]


def test_help_lists_every_verb():
    result = subprocess.run([sys.executable, "-m", "torchzebra.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: zebra" in result.stdout
    assert all(verb in result.stdout and verb in cli.__doc__ for verb in VERBS)


def test_help_and_the_package_load_without_torch():
    """``zebra --help`` is instant: neither the parser nor ``import torchzebra`` loads torch (heavy imports
    happen inside the verbs that need them)."""
    code = ("import sys, torchzebra, torchzebra.cli as c; c.build_parser(); "
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_lazy_names_are_the_functions_even_after_their_submodules_load():
    import torchzebra as tz
    import torchzebra.analysis.calibrate  # noqa: F401  (binds the submodule to the package: the function must win)
    import torchzebra.analysis.measure  # noqa: F401
    assert callable(tz.measure) and callable(tz.calibrate) and tz.measure.__name__ == "measure"
    assert {"prepare", "measure", "ZebraConfig"} <= set(tz.__all__) <= set(dir(tz))
    with pytest.raises(AttributeError):
        tz.not_a_name


@pytest.mark.parametrize("command", VERBS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0 and "usage: zebra " + command in capsys.readouterr().out


@pytest.mark.parametrize("nproc", [["--nproc", "2"], ["--nproc=2"]])
def test_nproc_hands_over_to_torchrun(monkeypatch, nproc):
    commands = []
    monkeypatch.setattr(verbs.subprocess, "run",
                        lambda command: commands.append(command) or subprocess.CompletedProcess(command, 0))
    assert main(["train", *nproc, "--set", "device=cpu"]) == 0
    command = commands[0]
    assert "--nproc-per-node=2" in command
    assert not any(arg.startswith("--nproc=") or arg == "--nproc" for arg in command)
    assert command[command.index("torchzebra.cli") + 1:][:3] == ["train", "--set", "device=cpu"]
    assert "--run-dir" in command


def test_train_with_override_then_eval(tmp_path, capsys, tiny_run):
    assert main(["train", *tiny_run.args("train.epochs=1"), "--run-dir", str(tmp_path / "run")]) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["epochs"] == 1
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run" / "last.pt"), "--set", "bits=16", "--quiet",
                 "--json", str(tmp_path / "eval.json")]) == 0
    out = capsys.readouterr().out
    assert "16 bits" in out and "layer1.0.relu:1" in out and (tmp_path / "eval.json").is_file()


def test_resume_uses_the_run_folders_config(tmp_path, capsys, tiny_run):
    run_dir = str(tmp_path / "run")
    assert main(["train", *tiny_run.args(), "--run-dir", run_dir]) == 0
    assert main(["train", "--run-dir", run_dir, "--resume", "--quiet"]) == 0  # no --set repeated: same settings
    assert main(["train", "--resume", "--quiet"]) == 2
    assert "--resume needs --run-dir" in capsys.readouterr().err


@pytest.mark.slow  # zebra run: two training runs, the report and the estimate
def test_run_writes_side_by_side_report(tmp_path, capsys, tiny_run):
    args = ["run", *tiny_run.args("zebra.threshold=0.3", "run.method=zebra", "distill.weight=0"),
            "--run-dir", str(tmp_path / "r")]
    assert main(args) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| dense baseline |" in report and "| Zebra |" in report and "## Per layer" in report
    assert (tmp_path / "r" / "report.json").is_file() and (tmp_path / "r" / "zebra" / "last.pt").is_file()
    estimate = json.loads((tmp_path / "r" / "estimate.json").read_text())  # one line per preset, and the JSON
    out = capsys.readouterr().out
    assert all(f"{name}, batch 1: " in out for name in estimate["accelerators"]) and len(estimate["accelerators"]) == 4
    batched = json.loads((tmp_path / "r" / "estimate-batched.json").read_text())  # each preset at its source's batch
    assert batched["accelerators"]["tpu-v1"]["batch"] == 32 and "tpu-v1, batch 32 (the batch its source runs)" in out
    assert "Why the energy saving is smaller than the traffic cut:" in out


@pytest.mark.slow  # zebra run: two training runs and the HTML report
def test_run_from_scratch_distilled_from_the_baselines_cached_targets(tmp_path, capsys, tiny_run):
    args = ["run", *tiny_run.args("run.method=zebra-scratch", "distill.weight=1", "distill.targets=cached",
                                  "zebra.density=0.5"), "--run-dir", str(tmp_path / "r")]
    assert main(args) == 0
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| Zebra from scratch |" in report
    assert "distilled from the baseline (weight 1, temperature 4, its targets cached)" in report
    out = capsys.readouterr().out
    assert "distillation targets: the teacher's logits for 256 training images, un-augmented, computed once" in out
    last_line = out.strip().splitlines()[-1]  # the run's own HTML report, printed last
    assert last_line.endswith(str(tmp_path / "r" / "report" / "report.html"))
    assert "<img" in (tmp_path / "r" / "report" / "report.html").read_text()
    checkpoint = torch.load(tmp_path / "r" / "zebra" / "last.pt", weights_only=True)
    assert checkpoint["extensions"] == {"distillation": {"weight": 1.0, "temperature": 4.0, "targets": "cached"}}
    assert checkpoint["optim"]["epochs"] == 1 and checkpoint["optim"]["lr"] == 0.1  # the baseline's recipe
    assert main(["run", *tiny_run.args("run.method=slim"), "--run-dir", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "zebra.block_size=0"], "block_size=0 is invalid"),
        (["train", "--set", "zebra.threshold=.nan"], "threshold=nan is invalid"),
        (["train", "--set", "zebra.score=median"], "score='median' is invalid"),
        (["train", "--set", "train.lr"], "override 'train.lr' is invalid"),
        (["train", "--set", "data.name=mnist"], "data set 'mnist' is unknown"),
        (["train", "--set", "data.name=cifar10", "--set", "data.root=/nonexistent"], "CIFAR-10 not found: looked in"),
        (["eval", "/nonexistent/last.pt"], "checkpoint /nonexistent/last.pt does not exist"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main([*args, "--quiet"] if args[0] == "eval" else [*args, "--quiet", "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
