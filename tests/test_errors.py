"""The project's error type: the command line prints it (and a file system refusing a named path) as one line,
and lets every other exception, a bug, raise with its traceback."""

import errno

import pytest

import torchzebra as tz
from torchzebra.accelerator.spec import AcceleratorError
from torchzebra.cli import main, verbs
from torchzebra.codec import StreamError
from torchzebra.config import ConfigError
from torchzebra.data import DatasetError
from torchzebra.errors import ZebraError
from torchzebra.reports.summary import ReportError
from torchzebra.results import ResultError
from torchzebra.training import CheckpointError, building


@pytest.mark.parametrize("error", [ConfigError, DatasetError, CheckpointError, StreamError, AcceleratorError,
                                   ResultError, ReportError])
def test_every_area_s_error_is_a_zebra_error_and_a_value_error(error):
    assert issubclass(error, ZebraError) and issubclass(error, ValueError) and tz.ZebraError is ZebraError


def test_library_input_errors_are_zebra_errors_that_value_error_still_catches():
    with pytest.raises(ZebraError, match="block_size=0 is invalid"):
        tz.ZebraConfig(block_size=0)
    with pytest.raises(ValueError, match="score='median' is invalid"):  # what library users caught before
        tz.ZebraConfig(score="median")


def _verb_raising(monkeypatch, error: BaseException) -> None:
    def verb(args):
        raise error
    monkeypatch.setitem(verbs.VERBS, "report", verb)


def test_the_project_s_error_is_one_line(monkeypatch, capsys):
    _verb_raising(monkeypatch, ZebraError("x=1 is invalid: use 2"))
    assert main(["report", "run", "--out", "out"]) == 2
    assert capsys.readouterr().err == "zebra report: error: x=1 is invalid: use 2\n"


@pytest.mark.parametrize("bug", [ValueError("not ours"), KeyError("stage"), TypeError("bad call"),
                                 OSError(errno.EPIPE, "Broken pipe")])
def test_anything_else_raises_with_its_traceback(monkeypatch, bug):
    """A ValueError that is not the project's, or an OSError about no path, is a bug: it is not turned into a line."""
    _verb_raising(monkeypatch, bug)
    with pytest.raises(type(bug)):
        main(["report", "run", "--out", "out"])


def test_a_file_system_refusing_a_named_path_is_one_line(monkeypatch, capsys):
    _verb_raising(monkeypatch, PermissionError(errno.EACCES, "Permission denied", "/read-only/report.md"))
    assert main(["report", "run", "--out", "out"]) == 2
    assert capsys.readouterr().err == "zebra report: error: /read-only/report.md: Permission denied\n"


def test_a_model_prepare_refuses_is_one_line(monkeypatch, capsys, tmp_path, tiny_run):
    """prepare()'s refusals (e.g. a submodule it cannot trace) reach the command line as a ConfigError."""
    def refuse(model, config):
        raise ValueError("prepare() traces the model and tracing failed inside layer1 (Block): ...")
    monkeypatch.setattr(building, "prepare", refuse)
    assert main(["train", *tiny_run.args(), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zebra train: error: model resnet18: prepare() traces the model and tracing failed")
    assert err.count("\n") == 1
