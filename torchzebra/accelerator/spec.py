"""Accelerator descriptions: small YAML files (shipped presets or the user's own), validated on reading.

Torch-free, so the command line can list the presets instantly. Every bad value is one ``AcceleratorError``
line naming the file, the key and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from .._checks import choice, is_number, is_whole, number, whole
from .._numbers import yaml_numbers
from ..errors import ZebraError

DATAFLOWS = ("os", "ws", "is")  # output, weight and input stationary, as SCALE-Sim names them
PRESETS = ("eyeriss", "tpu-v1", "mobile-npu", "ethos-u55")  # YAML files in this package's presets/ folder
BUFFERS = ("ifmap", "filter", "ofmap")
REQUIRED = ("array", "dataflow", "clock_ghz", "dram_gbps", "sram_kb", "pj_per_mac", "pj_per_dram_bit")
KNOWN = (*REQUIRED, "weight_bits", "batch")


class AcceleratorError(ZebraError):
    """An accelerator description is missing, unreadable or invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Accelerator:
    """A systolic-array accelerator: ``rows x cols`` MACs, a dataflow, a clock, a DRAM link, three on-chip
    buffers, energy per operation and the batch it runs. ``dram_gbps`` is in gigabytes (1e9 bytes) per second."""

    name: str
    rows: int
    cols: int
    dataflow: str
    clock_ghz: float
    dram_gbps: float
    sram_kb: dict[str, float]
    pj_per_mac: float
    pj_per_dram_bit: float
    weight_bits: int | None = None  # None: the traffic report's bit width
    batch: int = 1  # images per weight read, as the design's source runs it

    @property
    def bytes_per_cycle(self) -> float:
        """DRAM bytes moved per clock cycle: (GB/s) / (G cycles/s)."""
        return self.dram_gbps / self.clock_ghz

    @property
    def macs_per_cycle(self) -> int:
        """The array's peak MACs per cycle."""
        return self.rows * self.cols

    def buffer_bytes(self, buffer: str) -> float:
        """Capacity of the ``ifmap``, ``filter`` or ``ofmap`` buffer in bytes (1 kB = 1024 bytes)."""
        return self.sram_kb[buffer] * 1024

    def to_dict(self) -> dict[str, Any]:
        """The description as its YAML keys (plus the name)."""
        return {"name": self.name, "array": [self.rows, self.cols], "dataflow": self.dataflow,
                "clock_ghz": self.clock_ghz, "dram_gbps": self.dram_gbps, "sram_kb": dict(self.sram_kb),
                "pj_per_mac": self.pj_per_mac, "pj_per_dram_bit": self.pj_per_dram_bit,
                "weight_bits": self.weight_bits, "batch": self.batch}


def _check(ok: bool, origin: str, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise AcceleratorError(f"{origin}: {key}={value!r} is invalid: expected {expected}")


def from_dict(values: Any, name: str, origin: str | None = None) -> Accelerator:
    """An ``Accelerator`` named ``name`` from the keys of its YAML file; anything wrong is an AcceleratorError."""
    origin = origin or f"accelerator {name}"
    if not isinstance(values, dict):
        raise AcceleratorError(f"{origin} must hold a mapping of settings, got {type(values).__name__}")
    values = yaml_numbers(values)  # `dram_gbps: 1.0e9`, which YAML reads as text
    unknown = sorted(set(values) - set(KNOWN))
    if unknown:
        raise AcceleratorError(f"{origin}: unknown setting(s) {unknown}: known settings are {sorted(KNOWN)}")
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise AcceleratorError(f"{origin}: missing setting(s) {missing}: every description gives {list(REQUIRED)}")
    array = values["array"]
    _check(isinstance(array, list) and len(array) == 2 and all(is_whole(v) and v > 0 for v in array), origin,
           "array", array, "[rows, cols], two integers > 0")
    choice(values["dataflow"], f"{origin}: dataflow", DATAFLOWS, expected=f"expected {' or '.join(DATAFLOWS)}",
           error=AcceleratorError)
    for key in ("clock_ghz", "dram_gbps"):
        number(values[key], f"{origin}: {key}", above=0, expected="expected a number > 0", error=AcceleratorError)
    for key in ("pj_per_mac", "pj_per_dram_bit"):
        number(values[key], f"{origin}: {key}", least=0, expected="expected a number >= 0", error=AcceleratorError)
    sram = values["sram_kb"]
    _check(isinstance(sram, dict) and sorted(sram) == sorted(BUFFERS)
           and all(is_number(v) and v >= 0 for v in sram.values()), origin, "sram_kb", sram,
           "{ifmap: KB, filter: KB, ofmap: KB}, numbers >= 0")
    bits = values.get("weight_bits")
    if bits is not None:
        whole(bits, f"{origin}: weight_bits", least=1, most=64, error=AcceleratorError,
              expected="expected an integer from 1 to 64, or null (the report's bit width)")
    batch = whole(values.get("batch", 1), f"{origin}: batch", least=1, error=AcceleratorError,
                  expected="expected an integer >= 1 (images per weight read)")
    return Accelerator(name, array[0], array[1], values["dataflow"], float(values["clock_ghz"]),
                       float(values["dram_gbps"]), {b: float(sram[b]) for b in BUFFERS}, float(values["pj_per_mac"]),
                       float(values["pj_per_dram_bit"]), bits, batch)


def _parse(text: str, name: str, origin: str) -> Accelerator:
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise AcceleratorError(f"{origin} is not valid YAML: {' '.join(str(error).split())}") from error
    return from_dict(values, name, origin)


def load_accelerator(source: str | Path | Accelerator) -> Accelerator:
    """A shipped preset by name (``eyeriss``, ``tpu-v1``, ``mobile-npu``, ``ethos-u55``) or a YAML file (named by
    its stem)."""
    if isinstance(source, Accelerator):
        return source
    if str(source) in PRESETS:
        text = resources.files("torchzebra.accelerator").joinpath("presets", f"{source}.yaml").read_text()
        return _parse(text, str(source), f"preset {source}")
    path = Path(source)
    if not path.is_file():
        raise AcceleratorError(f"accelerator {str(source)!r} is neither a preset ({', '.join(PRESETS)}) nor a "
                               "readable YAML file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise AcceleratorError(f"cannot read accelerator file {path}: {error}") from error
    return _parse(text, path.stem, str(path))


def load_accelerators(sources: Iterable[str | Path | Accelerator]) -> list[Accelerator]:
    """Every description of ``sources`` (see ``load_accelerator``), at least one, each name once."""
    accelerators = [load_accelerator(source) for source in sources]
    names = [a.name for a in accelerators]
    if not accelerators or len(set(names)) < len(names):
        raise AcceleratorError(f"accelerators {names} are invalid: give at least one, each name (a preset or a "
                               "file's stem) once")
    return accelerators
