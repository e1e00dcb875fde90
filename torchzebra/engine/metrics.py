"""Per-epoch metrics: ``metrics.csv`` and ``metrics.json`` rewritten atomically, TensorBoard when installed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from .._io import atomic_write_text


class MetricsLog:
    """Rows of per-epoch metrics, mirrored to files in ``run_dir`` after every epoch (when ``write``: only
    the main process writes under torchrun)."""

    def __init__(self, run_dir: Path, write: bool = True) -> None:
        self.run_dir = run_dir
        self.write = write
        self.rows: list[dict[str, Any]] = []
        self._writer = None
        if not write:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            pass

    def append(self, row: dict[str, Any]) -> None:
        """Add one epoch's row and rewrite the files."""
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
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._writer.add_scalar(key, value, row["epoch"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
