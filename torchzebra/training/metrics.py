"""Per-epoch metrics: ``metrics.csv`` and ``metrics.json`` rewritten atomically, TensorBoard when asked for."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..errors import ZebraError


class MetricsLog:
    """Rows of per-epoch metrics, mirrored to files in ``run_dir`` after every epoch (when ``write``: only
    the main process writes under torchrun), and to TensorBoard in ``run_dir/tensorboard`` when asked."""

    def __init__(self, run_dir: Path, write: bool = True, tensorboard: bool = False) -> None:
        self.run_dir = run_dir
        self.write = write
        self.rows: list[dict[str, Any]] = []
        self._writer = _summary_writer(run_dir / "tensorboard") if write and tensorboard else None

    def append(self, row: dict[str, Any], kept_blocks: dict[str, float] | None = None) -> None:
        """Add one epoch's row (and each layer's kept-block fraction, for TensorBoard) and rewrite the files."""
        self.rows.append(row)
        if not self.write:
            return
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(self.rows, indent=2))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.run_dir / "metrics.csv", out.getvalue())
        if self._writer is not None:
            scalars = {key: value for key, value in row.items() if isinstance(value, (int, float)) and key != "epoch"}
            scalars.update({f"kept_blocks/{site}": value for site, value in (kept_blocks or {}).items()})
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, row["epoch"])
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _summary_writer(folder: Path):
    """TensorBoard's SummaryWriter on ``folder``; a clear error when the optional package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ZebraError("train.tensorboard: true needs the tensorboard package: pip install 'torchzebra[tensorboard]' "
                         "(or set train.tensorboard: false; metrics.csv is written either way)") from error
    return SummaryWriter(str(folder))
