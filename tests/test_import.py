"""``zebra import``: a model trained elsewhere, its weights checked in one line before any work, and the worked
example of docs/OWN_MODEL.md run as written."""

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from fixtures import image_folder_tree
from torch import nn

import torchzebra as tz
from torchzebra.cli import main
from torchzebra.results import read_result
from torchzebra.training import load_checkpoint
from torchzebra.workflows import importing

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--set", "data.name=imagefolder", "--set", "data.size=32", "--set", "device=cpu"]


def _example():
    """examples/own_model.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("own_model", ROOT / "examples" / "own_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _worked_example() -> list[list[str]]:
    """The commands of docs/OWN_MODEL.md's worked example, continuation lines joined."""
    text = (ROOT / "docs" / "OWN_MODEL.md").read_text().split("<!-- worked-example -->", 1)[1]
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


@pytest.mark.slow  # trains a small CNN for 10 epochs, imports, calibrates, estimates and exports it
def test_the_worked_example_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "own_model.py", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    commands = _worked_example()
    assert [c[:2] for c in commands] == [["python", "examples/own_model.py"], ["zebra", "import"], ["zebra", "eval"],
                                        ["zebra", "calibrate"], ["zebra", "estimate"], ["zebra", "export"]]
    _example().main(commands[0][2:])
    assert "val top-1" in capsys.readouterr().out
    for command in commands[1:]:
        assert main([*command[1:], "--quiet"]) == 0, command
        out = capsys.readouterr().out
        if command[1] == "import":
            top1 = float(re.search(r"top-1 ([\d.]+)%;", out).group(1))
            assert top1 > 60 and "KiB per image dense" in out and "0.relu" not in out.splitlines()[-1]
    assert load_checkpoint(tmp_path / "work" / "model.pt").config["model"]["name"].endswith("own_model.py:build")
    assert (tmp_path / "work" / "calibrated" / "report.md").is_file()
    assert (tmp_path / "work" / "export" / "density.yaml").is_file()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_folder_tree(tmp_path_factory.mktemp("images"), classes=("cat", "dog", "owl"), per_class=2)


def _model(classes: int = 3, channels: int = 3) -> nn.Module:
    return _example().build(classes, channels)


def _saved(value, path: Path) -> Path:
    torch.save(value, path)
    return path


def _import(weights: Path, images: Path, *extra: str) -> list[str]:
    return ["import", str(weights), "--model", f"{ROOT}/examples/own_model.py:build", "--set", f"data.root={images}",
            *DATA, "-o", str(weights.parent / "model.pt"), "--quiet", *extra]


BAD = {  # name: (how the file is made, excerpt of the one line)
    "wrong keys": (lambda p: _saved(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).state_dict(), p),
                   "does not fit {model} built for imagefolder (3 classes, 3 channels): 19 missing: "),
    "wrong class count": (lambda p: _saved(_model(10).state_dict(), p),
                          "2 shape differs: 11.bias [10] here [3], 11.weight [10, 16] here [3, 16]; the weights have "
                          "10 outputs and the data 3 classes; "),
    "wrong channels": (lambda p: _saved(_model(3, 1).state_dict(), p),
                       "the weights take 1 input channels and the data has 3"),
    "truncated": (lambda p: p.write_bytes(_saved(_model().state_dict(), p).read_bytes()[:3000]),
                  "is not a readable weights file: torch.load cannot read it, truncated or corrupt?"),
    "not a checkpoint": (lambda p: p.write_text("hello"),
                         "is not a readable weights file: it is not a zip archive as torch.save writes"),
    "no weights inside": (lambda p: _saved({"epoch": 3, "lr": 0.1}, p),
                          "holds a dict with keys ['epoch', 'lr'], not a model's weights"),
    "a tensor": (lambda p: _saved(torch.ones(3), p), "holds a Tensor, not a model's weights"),
    "a pickled module": (lambda p: _saved(_model(), p), "could run code; if you trust its source, allow it with "
                                                        "--trust-pickle"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_weights_are_one_line_before_any_work(name, tmp_path, images, capsys, monkeypatch):
    monkeypatch.setattr(importing, "evaluate", lambda *a, **k: pytest.fail("measured weights that do not fit"))
    weights = tmp_path / "weights.pt"
    BAD[name][0](weights)
    assert main(_import(weights, images)) == 2
    err = capsys.readouterr().err
    model = f"{ROOT}/examples/own_model.py:build"
    assert err.startswith("zebra import: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert BAD[name][1].format(model=model) in err, err
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module.", "pickled module"])
def test_weights_in_a_training_scripts_dict_or_a_trusted_module_import(wrap, tmp_path, images, capsys):
    model = _model()
    state = model.state_dict()
    value = {"module." + k: v for k, v in state.items()} if wrap == "module." else (
        model if wrap == "pickled module" else {wrap: state, "epoch": 7})
    weights = _saved(value, tmp_path / "weights.pt")
    assert main(_import(weights, images, *(["--trust-pickle"] if wrap == "pickled module" else []))) == 0
    assert "KiB per image dense" in capsys.readouterr().out
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert torch.equal(loaded.model["0.weight"], state["0.weight"]) and loaded.derived_from == str(weights)


def test_a_torchvision_model_imports_in_python_and_its_checkpoint_evaluates(tmp_path, images, capsys):
    import torchvision

    trained = torchvision.models.resnet18(num_classes=3)
    imported = tz.import_model(trained.state_dict(), "torchvision:resnet18", tmp_path / "model.pt",
                               [f"data.root={images}", "data.name=imagefolder", "data.size=32", "device=cpu"],
                               progress=False)
    assert imported.report.images == 6 and "torchvision:resnet18 on 6 test images of imagefolder" in imported.summary()
    assert main(["eval", str(tmp_path / "model.pt"), "--quiet"]) == 0
    assert "layer4.1.relu" in capsys.readouterr().out


def test_an_unknown_user_builder_is_one_line(tmp_path, images, capsys):
    weights = _saved(_model().state_dict(), tmp_path / "weights.pt")
    for model, message in (("no_such_module:build", "cannot import 'no_such_module': put the folder"),
                           (f"{ROOT}/examples/own_model.py:nothing", "has no function 'nothing'"),
                           ("missing.py:build", "the file")):
        args = _import(weights, images)
        args[args.index("--model") + 1] = model
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "model.pt").exists()


def test_an_imported_model_fine_tunes_with_zebra(tmp_path, images, capsys):
    weights = _saved(_model().state_dict(), tmp_path / "weights.pt")
    assert main(_import(weights, images)) == 0
    model, data = f"model.name={ROOT}/examples/own_model.py:build", f"data.root={images}"
    zebra = ["zebra.enabled=true", "train.epochs=1", "zebra.density_ramp_steps=1"]
    assert main(["train", "--init", str(tmp_path / "model.pt"), "--set", model, "--set", data, *DATA,
                 *(arg for setting in zebra for arg in ("--set", setting)), "--run-dir", str(tmp_path / "zebra"),
                 "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "zebra" / "last.pt").masked and "run folder:" in capsys.readouterr().out


def test_a_misspelt_model_name_suggests_the_closest_names():
    from torchzebra.models import build_model

    with pytest.raises(ValueError, match=r"'torchvision:resnet81' is unknown \(did you mean torchvision:resnet18"):
        build_model("torchvision:resnet81", 3, 3)
    with pytest.raises(ValueError) as refused:
        build_model("torchvision:nonsense", 3, 3)
    assert "alexnet" not in str(refused.value)  # no list of every classifier


def test_calibrate_prints_each_stage_without_bars_and_compares_batchnorm_like_with_like(tmp_path, images, capsys):
    """Without progress bars (a log file, a pipe, --quiet) each stage is one line; the report gives the unmasked
    model's top-1 with its BatchNorm statistics re-estimated as the calibrated rows' are (here a model never
    trained, whose running statistics are the initial ones)."""
    assert main(_import(_saved(_model().state_dict(), tmp_path / "w.pt"), images)) == 0
    capsys.readouterr()
    out = tmp_path / "cal"
    assert main(["calibrate", str(tmp_path / "model.pt"), "--out", str(out), "--budget", "0.5", "1", "--images", "2",
                 "--holdout", "4", "--densities", "0.5", "--quiet", *DATA]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("calibrate: ")]
    assert len(lines) == 5 and lines[0].startswith("calibrate: the unmasked model on the test split")
    assert "BatchNorm statistics re-estimated" in lines[1] and "sensitivity" in lines[2]
    assert lines[3].startswith("calibrate: budget 0.5 points: search")
    assert lines[4].startswith("calibrate: budget 1 point: search")
    result = read_result(out / "report.json")
    assert [row.label for row in result.rows[1:]] == ["calibrated, budget 0.5 points", "calibrated, budget 1 point"]
    renormed = result.rows[0].settings["batchnorm_reestimated_top1"]
    assert 0 <= renormed <= 1
    assert f"with its statistics re-estimated the same way scores {renormed * 100:.2f} %" in (
        out / "report.md").read_text()
