"""Per-epoch metrics loggers, as extensions: ``metrics.csv`` and ``metrics.json`` rewritten atomically after every
epoch, TensorBoard when asked for. Each writes the run's rows (``TrainRun.metrics``) after the epoch's evaluation."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..analysis.measure import TrafficReport
from ..errors import ZebraError
from .extensions import Extension, TrainRun


class _FileLogger(Extension):
    """A file in the run folder rewritten atomically after every evaluation with ``text`` of the rows so far."""

    filename = ""
    changes_results = False

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / self.filename

    def after_evaluation(self, run: TrainRun, row: dict[str, Any], report: TrafficReport | None) -> None:
        atomic_write_text(self.path, self.text(run.metrics, row))

    def text(self, rows: list[dict[str, Any]], latest: dict[str, Any]) -> str:
        raise NotImplementedError


class CsvLogger(_FileLogger):
    """``metrics.csv``: every epoch's row so far, the columns of the latest row."""

    name, filename = "csv", "metrics.csv"

    def text(self, rows: list[dict[str, Any]], latest: dict[str, Any]) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(latest))
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()


class JsonLogger(_FileLogger):
    """``metrics.json``: every epoch's row so far, as a list."""

    name, filename = "json", "metrics.json"

    def text(self, rows: list[dict[str, Any]], latest: dict[str, Any]) -> str:
        return json.dumps(rows, indent=2)


class TensorBoardLogger(Extension):
    """Every epoch's numeric columns and each layer's kept-block fraction (``kept_blocks/<site>``) to TensorBoard."""

    name = "tensorboard"
    changes_results = False

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._writer_class = _summary_writer_class()  # a missing package is refused before any training
        self._writer: Any = None  # a SummaryWriter once training starts

    def train_start(self, run: TrainRun) -> None:
        self._writer = self._writer_class(str(self.folder))

    def after_evaluation(self, run: TrainRun, row: dict[str, Any], report: TrafficReport | None) -> None:
        scalars = {key: value for key, value in row.items() if isinstance(value, (int, float)) and key != "epoch"}
        if report is not None:
            scalars.update({f"kept_blocks/{layer.name}": layer.block_density for layer in report.layers})
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, row["epoch"])
        self._writer.flush()

    def train_end(self, run: TrainRun, report: TrafficReport) -> None:
        self._writer.close()


def metric_loggers(run_dir: Path, tensorboard: bool) -> list[Extension]:
    """The loggers of every run: ``metrics.csv`` and ``metrics.json`` in ``run_dir``, and with ``tensorboard``
    its ``tensorboard`` folder."""
    loggers: list[Extension] = [CsvLogger(run_dir), JsonLogger(run_dir)]
    return loggers + [TensorBoardLogger(run_dir / "tensorboard")] if tensorboard else loggers


def _summary_writer_class():
    """TensorBoard's SummaryWriter; a clear error when the optional package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ZebraError("train.tensorboard: true needs the tensorboard package: pip install 'torchzebra[tensorboard]' "
                         "(or set train.tensorboard: false; metrics.csv is written either way)") from error
    return SummaryWriter
