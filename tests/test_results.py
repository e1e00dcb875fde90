"""One typed result for every run: written and read by one pair of functions, earlier files still read."""

import json
import shutil
from pathlib import Path

import pytest

from torchzebra.analysis.measure import LayerTraffic, TrafficReport
from torchzebra.cli import main
from torchzebra.config import load_config
from torchzebra.errors import ZebraError
from torchzebra.results import (
    METHODS,
    Machine,
    Method,
    ResultError,
    RunInfo,
    RunResult,
    method_extensions,
    model_row,
    read_result,
    register_method,
    run_methods,
    slim_flows,
    sweep_methods,
    write_result,
)

LEGACY = Path(__file__).parent / "data" / "legacy"  # files written by torchzebra before the schema had a version


def traffic(nonzero: int, correct: int = 90) -> TrafficReport:
    layer = LayerTraffic("layer1.0.relu", (4, 8, 8), 2, 100, 25600, 1600, nonzero, 800, 3200, 2,
                         {"dense": 76800, "zvc": 3 * (3200 + nonzero), "zebra": 9000, "zebra_zvc": 8000})
    return TrafficReport([layer], 8, 100, correct)


def test_a_result_reads_back_equal(tmp_path):
    base, zebra = traffic(20000), traffic(3000, correct=88)
    rows = (model_row("dense baseline", "dense", base, base, folder=tmp_path / "baseline", seconds=3.0),
            model_row("Zebra", "zebra", zebra, base, folder=tmp_path / "zebra", params=10, macs=20))
    result = RunResult("run", RunInfo("zebra run", Machine.here("cpu"), 12.5), {"seed": 0}, "dense baseline", rows)
    write_result(tmp_path / "report.json", result)
    assert read_result(tmp_path / "report.json") == result
    assert json.loads((tmp_path / "report.json").read_text())["rows"][1]["folder"] == "zebra"  # relative
    assert rows[1].reduction["dense"] == 0 and rows[1].reduction["zebra"] == pytest.approx(1 - 9000 / 76800)
    assert rows[1].delta_top1 == pytest.approx(-0.02) and result.row("Zebra") is rows[1]
    with pytest.raises(KeyError, match="no row 'Slimming'"):
        result.row("Slimming")


@pytest.mark.parametrize("folder, kind, methods", [
    ("run", "run", ["dense", "zebra"]),
    ("slim", "slim", ["dense", "zebra", "slim-sparse", "slim-pruned", "slim", "slim-zebra"]),
    ("sweep", "sweep", ["dense", "zebra", "zebra", "l1"]),
    ("sweep/baseline", "train", [""]),
])
def test_files_of_earlier_versions_are_read(folder, kind, methods):
    path = next(p for p in (LEGACY / folder / "sweep.json", LEGACY / folder / "report.json") if p.is_file())
    result = read_result(path)
    assert result.kind == kind and [row.method for row in result.rows] == methods
    assert all(0 <= row.top1 <= 1 and set(row.reduction) == {"dense", "zvc", "zebra", "zebra_zvc"}
               for row in result.rows)
    if kind in ("run", "slim"):
        assert result.rows[1].traffic.layers and result.rows[0].reduction["dense"] == 0
    if kind == "sweep":  # folders stored where the sweep ran are found beside the file
        assert result.rows[1].folder == LEGACY / "sweep" / "points" / "zebra,zebra.block_size=2"


def test_zebra_report_renders_folders_of_earlier_versions(tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(LEGACY, runs)
    out = tmp_path / "report"
    assert main(["report", str(runs / "run"), str(runs / "slim"), str(runs / "sweep"), "--out", str(out),
                 "--no-pictures"]) == 0
    page = (out / "report.html").read_text()
    assert "Slimming+Zebra" in page and "L1 activation reg." in page and "run: Zebra" in page
    assert (out / "layers.png").is_file() and (out / "pareto.png").is_file()


@pytest.mark.parametrize("text, message", [
    ("hello", "cannot be read as JSON"),
    ("[1, 2]", "is not a torchzebra result file"),
    ('{"torchzebra_result": 99}', "has result schema 99; this torchzebra reads 2"),
    ('{"torchzebra_result": 2, "kind": "run"}', "is not a valid torchzebra result"),
    ('{"rows": [{"model": "Zebra"}]}', "is not a torchzebra result this version can read"),
])
def test_a_result_file_that_is_not_ours_is_one_clear_error(tmp_path, capsys, text, message):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text(text)
    with pytest.raises(ResultError, match=message):
        read_result(tmp_path / "run" / "report.json")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--no-pictures"]) == 2
    err = capsys.readouterr().err
    assert message.split(";")[0] in err and err.count("\n") == 1


def test_one_registry_of_methods():
    """What the verbs train, in which folders, and the Slimming flows are all read off the registry's entries."""
    assert sweep_methods() == ("l1", "zebra", "zebra-scratch", "dense-retrained", "slim", "slim-zebra")
    assert run_methods() == ("zebra", "zebra-scratch")
    assert slim_flows() == {"slim": ("slim",), "slim-zebra": ("slim-zebra",), "joint": ("slim-zebra",),
                            "compare": ("slim", "slim-zebra")}
    assert {name: m.folder for name, m in METHODS.items() if m.folder} == {
        "dense": "baseline", "zebra": "zebra", "zebra-scratch": "zebra", "slim": "slim", "slim-zebra": "slim-zebra",
        "slim-sparse": "sparse"}
    assert all(m.start in ("scratch", "baseline", "pruned") for m in METHODS.values())
    assert len({m.title for m in METHODS.values()}) == len(METHODS)
    assert len({m.colour for m in METHODS.values()}) == len(METHODS)


def test_the_training_loop_binds_its_built_in_extension_factories():
    from torchzebra.training.extensions import BnSparsity

    config = load_config("quick", overrides=["slim.s=0.001"])
    [sparsity] = method_extensions("slim-sparse", config)
    assert isinstance(sparsity, BnSparsity) and sparsity.s == 0.001
    assert all(method_extensions(name, config) == [] for name in METHODS if name != "slim-sparse")


@pytest.mark.parametrize("changes, message", [
    ({"name": "zebra"}, "'zebra' is registered already"),
    ({"title": "Zebra"}, "title 'Zebra' is taken"),
    ({"start": "pretrained"}, "start='pretrained' is invalid: use one of scratch, baseline, pruned"),
])
def test_a_method_that_would_clash_is_refused(changes, message):
    before = dict(METHODS)
    with pytest.raises(ZebraError, match=message):
        register_method(Method(**{"name": "toy", "title": "toy", "colour": "#000000", "start": "baseline",
                                  "zebra_masks": False, "description": "a toy", **changes}))
    assert METHODS == before
