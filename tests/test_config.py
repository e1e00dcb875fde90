"""The run configuration's shape: every section defined in ``torchzebra/config/``, its values checked in one hook
(``check``) that the loader calls, and a bad value in any section one line naming it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from torchzebra.config import ConfigError, OptimSection, load_config
from torchzebra.config.run import RunConfig
from torchzebra.config.sections import Section, SettingError

PACKAGE = Path(__file__).resolve().parents[1] / "torchzebra"

# One bad value per section of RunConfig, and the start of the one line that says so.
BAD_VALUES = {
    "model": ("model.name=3", "model.name=3 is invalid: expected a string"),
    "data": ("data.name=mnist", "data: data set 'mnist' is unknown: use one of fashion-mnist,"),
    "train": ("train.schedule=cosin", "train.schedule='cosin' is invalid: use one of onecycle, cosine, constant"),
    "finetune": ("finetune.epochs=many", "finetune.epochs='many' is invalid: expected an int"),
    "zebra": ("zebra.warmup_steps=-5", "zebra: warmup_steps=-5 is invalid"),
    "slim": ("slim.s=-1", "slim.s=-1 is invalid: the sparsity weight is a number >= 0"),
    "distill": ("distill.weight=.inf", "distill.weight=inf is invalid: expected a finite number"),
    "run": ("run.method=slim", "run.method='slim' is invalid: use one of zebra, zebra-scratch"),
    "sweep": ("sweep.grid=3", "sweep.grid=3 is invalid: expected a mapping"),
}


def _section_classes() -> dict[str, type]:
    """Every section class of the run config, by the ``RunConfig`` field that holds it."""
    defaults = RunConfig()
    return {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(RunConfig)
            if dataclasses.is_dataclass(getattr(defaults, f.name))}


def test_every_section_is_defined_in_config_with_the_one_check_hook():
    classes = _section_classes()
    assert set(classes) == set(BAD_VALUES), "give the new section a bad value in BAD_VALUES"
    for name, cls in classes.items():
        assert cls.__module__.startswith("torchzebra.config."), f"{name}: {cls.__module__}"
        assert issubclass(cls, Section) and callable(cls.check), name
        assert "__post_init__" not in vars(cls) and not hasattr(cls, "_validate"), name


def test_no_section_class_or_other_validation_style_outside_the_hook():
    """Section classes live in config/ only, and config/ validates in ``check`` alone (no ``__post_init__`` or
    ``_validate``); the training loop repeats none of its checks."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(PACKAGE)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Section"):
                assert where.parts[0] == "config", f"{where} defines {node.name}"
            if where.parts[0] == "config" and isinstance(node, ast.FunctionDef):
                assert node.name not in ("__post_init__", "_validate"), f"{where} defines {node.name}"
    assert "ConfigError" not in (PACKAGE / "training" / "optim.py").read_text()


@pytest.mark.parametrize("section", sorted(BAD_VALUES))
def test_a_bad_value_in_each_section_is_one_line(section):
    override, message = BAD_VALUES[section]
    with pytest.raises(ConfigError) as raised:
        load_config("quick", overrides=[override])
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_exponent_numbers_that_yaml_reads_as_text_are_numbers(tmp_path):
    """PyYAML reads ``1e-3`` and ``1.0e5`` (no dot or no exponent sign) as text: a number setting takes them."""
    config = load_config("quick", overrides=["train.lr=1e-3", "slim.s=1.0e-5", "zebra.lam_epochs=[1e-2, 2E-2]"])
    assert config.train.lr == 1e-3 and config.slim.s == 1e-5 and config.zebra.lam_epochs == [0.01, 0.02]
    path = tmp_path / "c.yaml"
    path.write_text("zebra:\n  density: {'layer4.*': 4e-1, '*': 2e-1}\n")
    assert load_config("quick", path).zebra.density == {"layer4.*": 0.4, "*": 0.2}
    with pytest.raises(ConfigError, match="data.size='1e2' is invalid: expected an int or null"):
        load_config("quick", overrides=["data.size=1e2"])  # a float where an int is expected stays an error


def test_the_hook_checks_a_section_built_in_python():
    OptimSection(schedule="cosine").check()
    with pytest.raises(SettingError, match="schedule='warm' is invalid"):
        OptimSection(schedule="warm").check()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown setting\(s\) in train \['epoch'\]"),
        ("train.epochs=many", "train.epochs='many' is invalid: expected an int"),
        ("data.size=abc", r"data.size='abc' is invalid: expected an int or null"),
        ("zebra.weight=heavy", r"zebra: weight='heavy' is invalid"),
        ("zebra.leaf_modules=3", r"zebra.leaf_modules=3 is invalid: expected a list \(each item a string\)"),
        ("sweep.points=[1]",
         r"sweep.points=\[1\] is invalid: expected a list \(each item a mapping of a string to any value\)"),
        ("colour=blue", r"unknown setting\(s\) \['colour'\]"),
        ("novalue", "override 'novalue' is invalid: write section.key=value"),
        ("data=[1, 2]", "data must be a mapping"),
        ("zebra.block_size=big", "zebra: block_size='big' is invalid"),
        ("zebra.threshold={'layer1.*': -1}", r"zebra: threshold\['layer1.\*'\]=-1 is invalid"),
        ("zebra.density=1.5", r"zebra: density\['\*'\]=1.5 is invalid"),
        ("zebra.density={'layer4.*': abc}",
         r"zebra.density=\{.*'layer4.\*': 'abc'.*\} is invalid: "
         r"expected a finite number or a mapping of a string to a finite number"),
        ("zebra.lam_epochs=0.1",
         r"zebra.lam_epochs=0.1 is invalid: expected a list \(each item a finite number\) or null"),
        ("finetune.schedule=cosin", "finetune.schedule='cosin' is invalid: use one of onecycle, cosine, constant"),
    ],
)
def test_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", overrides=[override])


def test_per_layer_and_map_values_are_accepted():
    config = load_config("quick",
                         overrides=["zebra.block_size={'layer4.*': map, '*': 4}", "zebra.threshold={'*': 0.1}"])
    assert config.zebra.block_size == {"layer4.*": "map", "*": 4}
    assert load_config("quick", overrides=["zebra.block_size=map"]).zebra.block_size == "map"


def test_presets_and_config_file(tmp_path):
    assert load_config("paper").data.name == "tiny-imagenet"
    with pytest.raises(ConfigError, match="preset 'fast' is unknown"):
        load_config("fast")
    file = tmp_path / "mine.yaml"
    file.write_text("train: {epochs: 7}\nzebra: {lam: 0.5}\n")
    config = load_config("quick", file, ["zebra.lam=0.25"])
    assert (config.train.epochs, config.zebra.lam, config.model.name) == (7, 0.25, "resnet18")
    file.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config("quick", file)
