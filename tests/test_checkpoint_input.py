"""Checkpoints read back: the payload round-trips, files that are not torchzebra checkpoints (or are of another model)
are one clear error, and model.options / torchvision models from the command line."""

import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchzebra.cli import main
from torchzebra.config import ConfigError, load_config
from torchzebra.training import Checkpoint, CheckpointError, load_checkpoint, load_trained, save_checkpoint, train
from torchzebra.training.checkpoint import ZIP_MAGIC
from torchzebra.workflows.artefacts import checkpoint_maps

UNREADABLE = "is not a readable torchzebra checkpoint: "


def _small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))


def _tiny_checkpoint() -> bytes:
    """The bytes of a real checkpoint written by ``save_checkpoint`` (a small model's weights)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"
        save_checkpoint(path, Checkpoint(_small_model().state_dict(), {}, {}))
        return path.read_bytes()


REAL = _tiny_checkpoint()


class RunsCode:
    """A pickled object whose loading would call ``os.system``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, ("echo unsafe",)


def _saved(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return buffer.getvalue()


def _legacy_pickle() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": {}}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


BAD_FILES = {  # name: (contents, excerpt of the reason)
    "hello": (b"hello", "not a zip archive as torch.save writes (it starts with b'hell')"),
    "empty": (b"", "the file is empty"),
    "random": (bytes(range(7, 250, 3)), "not a zip archive as torch.save writes"),
    "truncated": (REAL[: len(REAL) // 2], "torch.load cannot read it, truncated or corrupt?"),
    "zip-not-torch": (_zip_of_text(), "torch.load cannot read it, truncated or corrupt?"),
    "legacy-pickle": (_legacy_pickle(), "not a zip archive as torch.save writes"),
    "plain-dict": (_saved({"model": {}, "epoch": 3}), "it holds a dict with keys ['model', 'epoch'], not a "
                   "torchzebra checkpoint (no 'torchzebra-checkpoint' marker)"),
    "state-dict": (_saved(_small_model().state_dict()), "it holds a state_dict with keys ['0.weight', '0.bias',"),
    "tensor": (_saved(torch.ones(3)), "it holds a Tensor, not a torchzebra checkpoint"),
    "runs-code": (_saved({"format": "torchzebra-checkpoint", "x": RunsCode()}),
                  "refused by torch.load(weights_only=True): it holds the Python object "),
    "shutil-error": (_saved({"format": "torchzebra-checkpoint", "x": shutil.Error("x")}),
                     "it holds the Python object shutil.Error, not only tensors and plain data, and loading it could "
                     "run code"),
}
CODE = ("runs-code", "shutil-error")


@pytest.mark.parametrize("name", BAD_FILES)
def test_eval_of_a_file_that_is_not_a_checkpoint_is_one_line(name, tmp_path, capsys):
    contents, reason = BAD_FILES[name]
    path = tmp_path / f"{name}.pt"
    path.write_bytes(contents)
    assert main(["eval", str(path), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"zebra eval: error: {path} {UNREADABLE}") and captured.err.count("\n") == 1
    assert reason in captured.err and "Traceback" not in captured.err and captured.out == ""
    assert ("could run code" in captured.err) == (name in CODE)


def test_a_directory_is_not_a_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["eval", ".", "--quiet"]) == 2
    assert capsys.readouterr().err == (f"zebra eval: error: . {UNREADABLE}it is a directory; give the checkpoint "
                                       "file in it, e.g. last.pt\n")


@pytest.mark.parametrize("verb", [
    ["eval", "{bad}"], ["prune", "{bad}", "--dry-run"], ["calibrate", "{bad}", "--out", "{out}"],
    ["export", "{bad}", "--out", "{out}"], ["train", "--init", "{bad}", "--run-dir", "{out}"],
])
def test_every_verb_that_reads_a_checkpoint_says_so_in_one_line(verb, tmp_path, capsys, tiny_run):
    bad, out = tmp_path / "hello.pt", tmp_path / "out"
    bad.write_bytes(b"hello")
    assert main([arg.format(bad=bad, out=out) for arg in verb] + (tiny_run.args() if verb[0] == "train" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zebra {verb[0]}: error: {bad} {UNREADABLE}") and err.count("\n") == 1
    assert not out.exists()  # refused before anything is written


def test_report_pictures_read_checkpoints_through_the_same_loader(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match=UNREADABLE):
        checkpoint_maps(tmp_path / "last.pt")


def _load(folder: Path, contents: bytes) -> Checkpoint:
    path = folder / "fuzz.pt"
    path.write_bytes(contents)
    return load_checkpoint(path)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=300), zipped=st.booleans())
def test_random_small_files_are_only_ever_a_checkpoint_error(blob, zipped):
    with tempfile.TemporaryDirectory() as folder, pytest.raises(CheckpointError, match=UNREADABLE):
        _load(Path(folder), ZIP_MAGIC + blob if zipped else blob)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, len(REAL) - 1))
def test_every_truncation_of_a_real_checkpoint_is_a_checkpoint_error(size):
    with tempfile.TemporaryDirectory() as folder, pytest.raises(CheckpointError, match=UNREADABLE):
        _load(Path(folder), REAL[:size])


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(0, len(REAL) - 1), value=st.integers(0, 255))
def test_a_damaged_real_checkpoint_loads_or_is_a_checkpoint_error(offset, value):
    damaged = bytearray(REAL)
    damaged[offset] = value
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing but the one-line error reaches the user
        try:
            assert isinstance(_load(Path(folder), bytes(damaged)).model, dict)
        except CheckpointError as error:
            assert "\n" not in str(error)


@pytest.mark.parametrize("overrides, options", [
    ([], {"stem": "cifar", "width": 16}),
    (["model.options={width: 8}"], {"stem": "cifar", "width": 8}),  # a mapping still merges key by key
    (["model.options.width=8"], {"stem": "cifar", "width": 8}),
    (["model.options={}"], {}),
    (["model.options=null"], {}),
    (["model.name=resnet18"], {"stem": "cifar", "width": 16}),  # the same model keeps its options
    (["model.name=torchvision:resnet18"], {}),  # another model drops the preset's
    (["model.name=torchvision:resnet18", "model.options={zero_init_residual: true}"], {"zero_init_residual": True}),
    (["model={name: vgg11, options: {width: 8}}"], {"width": 8}),
    (["model.options={}", "model.options.width=8"], {"width": 8}),
])
def test_model_options_can_be_replaced_and_cleared(overrides, options):
    assert load_config("quick", overrides=overrides).model.options == options


@pytest.mark.parametrize("key", ["zebra.density", "zebra.threshold", "zebra.block_size"])
def test_a_per_site_mapping_replaces_the_presets_whole(tmp_path, key):
    """Patterns are ordered (the first match wins): merged into the preset's, the preset's '*' would shadow them."""
    mapping = {"features.[0-4].*": 4, "*": 2} if key == "zebra.block_size" else {"features.[0-4].*": 0.5, "*": 0.8}
    override = f"{key}={json.dumps(mapping)}"
    section, name = key.split(".")
    assert getattr(load_config("quick", overrides=[override]).zebra, name) == mapping
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({section: {name: mapping}}))
    assert getattr(load_config("quick", file).zebra, name) == mapping


@pytest.mark.parametrize("file, options", [
    ({"model": {"options": {}}}, {}),
    ({"model": {"options": None}}, {}),
    ({"model": {"name": "vgg11"}}, {}),
    ({"model": {"name": "torchvision:resnet18", "options": {"groups": 1}}}, {"groups": 1}),
    ({"model": {"name": "resnet18", "options": {"width": 8}}}, {"stem": "cifar", "width": 8}),
])
def test_a_config_file_can_replace_and_clear_model_options(file, options, tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(file))
    assert load_config("quick", tmp_path / "config.yaml").model.options == options


def test_model_options_of_the_wrong_type_are_still_refused():
    with pytest.raises(ConfigError, match=r"model.options=\[\] is invalid: expected a mapping"):
        load_config("quick", overrides=["model.options=[]"])


def test_torchvision_model_given_an_option_it_does_not_take_is_one_line(tmp_path, capsys, tiny_run):
    run_dir = tmp_path / "run"
    assert main(["train", *tiny_run.args("model.name=torchvision:resnet18", "model.options={stem: cifar}"),
                 "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model 'torchvision:resnet18' does not take the option(s) ['stem']" in err
    assert "clear them with model.options={}" in err and not run_dir.exists()


@pytest.mark.slow  # trains a full-width ResNet-18
def test_a_torchvision_model_trains_from_the_cli_and_its_checkpoint_evaluates(tmp_path, capsys, tiny_run):
    run_dir = tmp_path / "run"
    assert main(["train", *tiny_run.args("model.name=torchvision:resnet18"), "--run-dir", str(run_dir)]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    assert saved == {"name": "torchvision:resnet18", "options": {}}
    assert load_checkpoint(run_dir / "last.pt").epoch == 1
    capsys.readouterr()
    assert main(["eval", str(run_dir / "last.pt"), "--quiet", "--json", str(tmp_path / "eval.json")]) == 0
    assert "layer4.1.relu" in capsys.readouterr().out and (tmp_path / "eval.json").is_file()


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


def test_checkpoint_of_another_model_lists_keys(tmp_path, tiny_run):
    train(tiny_run.config(), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="does not fit this model .*shape differs: "):
        load_trained(tmp_path / "run" / "last.pt", ["model.options={stem: cifar, width: 8}"])
