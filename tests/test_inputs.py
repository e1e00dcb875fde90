"""Inputs as a new user types them: numbers in exponent form, glued YAML mappings, output paths that cannot be
written, repeated or zero budgets, a reused calibrate folder; each is read right or refused in one line before any
work, and refusals that need no torch come before torch is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from torchzebra._checks import choice, fraction, number, whole
from torchzebra.cli import main
from torchzebra.config import ConfigError, load_config
from torchzebra.errors import ZebraError


@pytest.mark.parametrize("check, value, message", [
    (lambda v: number(v, "lr", least=0), True, "lr=True is invalid: use a finite number >= 0"),
    (lambda v: number(v, "lr", least=0), float("inf"), "lr=inf is invalid"),
    (lambda v: number(v, "lr", least=0), -1, "lr=-1 is invalid: use a finite number >= 0"),
    (lambda v: number(v, "t", above=0), 0, "t=0 is invalid: use a finite number > 0"),
    (lambda v: whole(v, "--rounds", least=1), 0, "--rounds 0 is invalid: use a whole number >= 1"),
    (lambda v: whole(v, "n", least=1), 2.0, "n=2.0 is invalid"),
    (lambda v: fraction(v, "density"), 0, r"density=0 is invalid: use a finite number in \(0, 1\]"),
    (lambda v: fraction(v, "ratio", one=False), 1, r"in \(0, 1\)"),
    (lambda v: choice(v, "score", ("mean", "max")), "median", "score='median' is invalid: use one of mean, max"),
    (lambda v: choice(v, "bits", (8, 16)), True, "bits=True is invalid"),
])
def test_one_validator_refuses_in_one_line(check, value, message):
    with pytest.raises(ZebraError, match=message):
        check(value)


def test_validators_return_the_value():
    assert number(1, "x", least=0) == 1.0 and whole(3, "x", least=1, most=3) == 3
    assert fraction(1, "x") == 1.0 and fraction(0, "x", zero=True) == 0.0 and choice("max", "s", ("max",)) == "max"


def test_numbers_in_exponent_form_are_numbers():
    config = load_config("quick", overrides=["train.lr=1e-3", "zebra.lam=1e-4", "slim.s=1e-5",
                                             "finetune.weight_decay=5e-4"])
    assert (config.train.lr, config.zebra.lam, config.slim.s, config.finetune.weight_decay) == (1e-3, 1e-4, 1e-5, 5e-4)


def test_a_grid_in_exponent_form_sweeps_numbers():
    from torchzebra.workflows.sweep import _plan

    config = load_config("quick", overrides=["sweep.grid={zebra.lam: [1e-3, 1e-2]}"])
    assert [(point["zebra.lam"], stage.zebra.lam) for _, point, stage in _plan(config)] == [(1e-3, 1e-3),
                                                                                          (1e-2, 1e-2)]


@pytest.mark.parametrize("override, message", [
    ("distill.weight=.inf", "distill.weight=inf is invalid: expected a finite number"),
    ("train.lr=.nan", "train.lr=nan is invalid"),
    ("data.batch_size=0", "data.batch_size=0 is invalid: use a whole number >= 1"),
    ("train.momentum=1", r"train.momentum=1 is invalid: use a finite number in \[0, 1\)"),
    ("model.options={stem:cifar,width:8}", "YAML reads 'stem:cifar' as a key without a value; write a space after "
                                           "each colon"),
])
def test_a_bad_setting_is_refused_when_the_config_is_read(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", overrides=[override])


def _refusal(tmp_path, capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("args, message", [
    (["calibrate", "ck.pt", "--out", "{file}"], "--out {file} is a file, not a folder"),
    (["eval", "ck.pt", "--json", "{file}/x.json"], "--json {file}/x.json: {file} is a file, not a folder"),
    (["eval", "ck.pt", "--csv", "{folder}"], "--csv {folder} is a folder: give the file to write"),
    (["export", "ck.pt", "--out", "{file}"], "--out {file} is a file"),
    (["estimate", "ck.pt", "--json", "{folder}"], "--json {folder} is a folder"),
    (["train", "--run-dir", "{file}/run"], "--run-dir {file}/run: {file} is a file"),
    (["calibrate", "ck.pt", "--out", "{folder}/new", "--budget", "1", "1"], "--budget 1 is given twice"),
    (["calibrate", "ck.pt", "--out", "{folder}/new", "--budget", "0"], "--budget 0.0 is invalid"),
])
def test_an_output_path_or_argument_is_refused_before_any_work(args, message, tmp_path, capsys):
    (tmp_path / "file").write_text("kept")
    paths = {"file": str(tmp_path / "file"), "folder": str(tmp_path)}
    err = _refusal(tmp_path, capsys, [arg.format(**paths) for arg in args])
    assert message.format(**paths) in err
    assert (tmp_path / "file").read_text() == "kept" and not (tmp_path / "new").exists()


def test_a_reused_calibrate_folder_is_refused(tmp_path, capsys):
    (tmp_path / "out" / "budget-1").mkdir(parents=True)
    err = _refusal(tmp_path, capsys, ["calibrate", "ck.pt", "--out", str(tmp_path / "out")])
    assert "holds an earlier calibration (budget-1): give a new folder, or remove that one first" in err


@pytest.mark.parametrize("args, message", [
    (["calibrate", "ck.pt", "--out", "{file}"], "is a file, not a folder"),
    (["train", "--config", "{file}"], "must hold a mapping of settings, got list"),
    (["train", "--config", "{broken}"], "is not valid YAML: expected ',' or '}', but got '<stream end>' (line 2"),
    (["train", "--config", "{folder}/missing.yaml"], "cannot read config file"),
    (["sweep", "--grid", "zebra.lam"], "write section.key=value"),
    (["run", "--set", "model.options={{stem:cifar}}"], "write a space after each colon"),
])
def test_refusals_that_need_no_torch_come_before_torch_is_imported(args, message, tmp_path):
    (tmp_path / "file").write_text("- a list\n")
    (tmp_path / "broken").write_text("train: {epochs: 3\n")
    paths = {"file": str(tmp_path / "file"), "broken": str(tmp_path / "broken"), "folder": str(tmp_path)}
    script = ("import sys; from torchzebra.cli import main; "
              f"code = main({[arg.format(**paths) for arg in args]!r}); "
              "print(code, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["2", "False"], run.stderr
    assert message in run.stderr and run.stderr.count("\n") == 1, run.stderr
