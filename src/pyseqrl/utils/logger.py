"""Metric logging to CSV and (when installed) TensorBoard, one row per logging step."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("pyseqrl")


class RunLogger:
    """Writes scalar metrics of a run to ``<run_dir>/metrics.csv`` and TensorBoard event files.

    The CSV header grows when a new metric appears (the file is rewritten once), so every metric of the run ends
    up in one table. On resume, existing rows are kept and rows at or past the resume step are dropped, so the
    log has no duplicate steps.

    Example:
        >>> logger = RunLogger("runs/demo", tensorboard=False)
        >>> logger.log(10, {"loss": 0.5})
        >>> logger.close()
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self._rows: list[dict[str, Any]] = []
        self._fields: list[str] = ["step"]
        if resume_step is not None and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                reader = csv.DictReader(f)
                self._fields = list(reader.fieldnames or ["step"])
                self._rows = [r for r in reader if int(float(r["step"])) < resume_step]
        self._rewrite()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=resume_step)
            except ImportError as e:  # tensorboard not installed
                log.info("TensorBoard logging disabled: %s", e)

    def _rewrite(self) -> None:
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields)
            w.writeheader()
            w.writerows(self._rows)
        os.replace(tmp, self.csv_path)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self._fields]
        self._rows.append(row)
        if new:
            self._fields += new
            self._rewrite()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._fields).writerow(row)
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
