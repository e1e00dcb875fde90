"""One JSON schema for every result file (``report.json`` of any run, ``sweep.json``), written and read here.

Files written by earlier versions (before the schema had a version) are read through ``_legacy`` so that
old run folders still render; anything else is a ``ResultError`` saying how to regenerate the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..analysis.measure import TrafficReport
from ..errors import ZebraError
from .files import REPORT, SWEEP
from .methods import METHODS
from .schema import KINDS, Machine, ModelRow, RunInfo, RunResult

SCHEMA = 2  # version of the result files; 1 is the unversioned layout read by _legacy
MARKER = "torchzebra_result"


class ResultError(ZebraError):
    """A result file cannot be read; the message says which and how to regenerate it."""


def result_file(run_dir: str | Path) -> Path | None:
    """The result file of a run folder (``sweep.json`` or ``report.json``), or None."""
    run_dir = Path(run_dir)
    return next((run_dir / name for name in (SWEEP, REPORT) if (run_dir / name).is_file()), None)


def write_result(path: str | Path, result: RunResult) -> None:
    """Write ``result`` as JSON (atomically); row folders are stored relative to the file's folder."""
    path = Path(path)
    values = {
        MARKER: SCHEMA, "kind": result.kind, "command": result.info.command, "machine": asdict(result.info.machine),
        "wall_seconds": result.info.wall_seconds, "config": result.config, "reference": result.reference,
        "rows": [_row_dict(row, path.parent) for row in result.rows],
    }
    atomic_write_text(path, json.dumps(values, indent=2))


def _row_dict(row: ModelRow, base: Path) -> dict[str, Any]:
    values = {f.name: getattr(row, f.name) for f in fields(row)}
    values["traffic"] = row.traffic.to_dict() if row.traffic is not None else None
    values["folder"] = None if row.folder is None else os.path.relpath(row.folder, base)
    return values


def read_result(path: str | Path) -> RunResult:
    """The result in ``path`` (this schema or an earlier version's); anything else is a ResultError."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultError(f"{path} cannot be read as JSON ({error}); was the run interrupted while writing? "
                          "Rerun its command with --resume to write it again") from error
    if not isinstance(values, dict):
        raise ResultError(f"{path} is not a torchzebra result file")
    if MARKER not in values:
        return _legacy(values, path)
    if values[MARKER] != SCHEMA:
        raise ResultError(f"{path} has result schema {values[MARKER]!r}; this torchzebra reads {SCHEMA}: "
                          "read it with the version that wrote it, or rerun the command")
    try:
        return _from_dict(values, path.parent)
    except (KeyError, TypeError, ValueError) as error:
        raise ResultError(f"{path} is not a valid torchzebra result ({type(error).__name__}: {error}); "
                          "rerun the command that wrote it") from error


def stage_traffic(traffic: TrafficReport | None, folder: Path | None) -> TrafficReport | None:
    """A model's per-layer traffic: ``traffic`` when the result kept it, else (sweeps of earlier versions) the
    one in its stage folder's ``report.json``, else None."""
    if traffic is not None or folder is None or not (folder / REPORT).is_file():
        return traffic
    return read_result(folder / REPORT).rows[0].traffic


def _from_dict(values: dict[str, Any], base: Path) -> RunResult:
    if values["kind"] not in KINDS:
        raise ZebraError(f"kind {values['kind']!r} is not one of {KINDS}")
    rows = []
    for row in values["rows"]:
        traffic = TrafficReport.from_dict(row["traffic"]) if row.get("traffic") else None
        folder = None if row.get("folder") is None else base / row["folder"]
        rows.append(ModelRow(**{**row, "traffic": traffic, "folder": folder}))
    info = RunInfo(values["command"], Machine(**values["machine"]), values["wall_seconds"])
    return RunResult(values["kind"], info, values["config"], values["reference"], tuple(rows))


def _legacy(values: dict[str, Any], path: Path) -> RunResult:
    """A result written before the schema had a version: a stage's traffic report, a run/slim summary or a
    sweep summary, converted (rows keep their numbers; traffic is kept where the file had it)."""
    try:
        if "rows" not in values and "layers" in values:  # a training stage's report.json: its traffic only
            traffic = TrafficReport.from_dict(values)
            row = _legacy_row(path.parent.name, "", values, traffic)
            return RunResult("train", _UNKNOWN_INFO, {}, row.label, (row,))
        info = RunInfo(values["command"], Machine(**values["machine"]), values["wall_seconds"])
        if values["command"] == "zebra sweep":
            rows = tuple(_legacy_row(row["point"], row["method"], row, None, _legacy_folder(row["folder"], path.parent))
                         for row in values["rows"])
            return RunResult("sweep", info, values["config"], rows[0].label, rows)
        titles = {method.title: name for name, method in METHODS.items()}
        reports = values.get("reports") or {"dense baseline": values.get("baseline"), "Zebra": values.get("zebra")}
        stages: list[ModelRow] = []
        for row in values["rows"]:
            method = titles[row["model"]]
            report = TrafficReport.from_dict(reports[row["model"]]) if reports.get(row["model"]) else None
            folder = path.parent / name if (name := METHODS[method].folder) else None
            stages.append(_legacy_row(row["model"], method, row, report, folder))
        kind = "slim" if "flow" in values else "run"
        return RunResult(kind, info, values["config"], values.get("reference", "dense baseline"), tuple(stages))
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ResultError(f"{path} is not a torchzebra result this version can read ({type(error).__name__}: "
                          f"{error}); regenerate it: rerun the zebra run/slim/sweep command that wrote it in a new "
                          "folder") from error


_UNKNOWN_INFO = RunInfo("unknown (written by an earlier torchzebra)", Machine("unknown", 0, "unknown", "unknown"), 0.0)


def _legacy_row(label: str, method: str, row: dict[str, Any], traffic: TrafficReport | None,
                folder: Path | None = None) -> ModelRow:
    top1 = row.get("top1", row.get("accuracy"))
    return ModelRow(label, method, top1, row.get("delta_top1"), row["reduction"], row.get("bytes_per_image", {}),
                    traffic, row.get("settings", {}), row.get("params"), row.get("macs"), row.get("seconds"), folder)


def _legacy_folder(stored: str, base: Path) -> Path:
    """Sweeps of earlier versions stored folders relative to where they ran: the folder beside the file, found
    by the longest tail of the stored path that exists under ``base``, else the stored path itself."""
    folder = Path(stored)
    for start in range(1, len(folder.parts)):
        candidate = base.joinpath(*folder.parts[start:])
        if candidate.is_dir():
            return candidate
    return folder
