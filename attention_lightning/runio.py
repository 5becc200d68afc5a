"""Files a run writes, made safe to kill at any moment and to continue.

- ``AtomicCheckpointIO``: a checkpoint is written to ``<path>.tmp`` and renamed over ``<path>``, so a crash
  (SIGKILL, pre-emption, a non-finite loss) leaves either the old checkpoint or the new one, never half of one.
- ``AppendingCSVLogger``: a CSV logger that, when its version directory already holds ``metrics.csv`` (a
  resumed run), keeps the rows and appends, where Lightning's would delete them.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Optional

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Optional[Any] = None) -> None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp"
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the complete new one


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)


class AppendingCSVLogger(CSVLogger):
    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
