"""Progress for logs: when stdout is not a terminal, one line per train epoch and per validation instead of
a progress bar's redraws (which pile up as thousands of lines in a log file); in a terminal, Lightning's bar
updated at most ten times a second."""
from __future__ import annotations

import math
import time
from typing import Any

from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar


class EpochLines(ProgressBar):
    """Prints ``epoch E step S v_num V: name=value ...`` after each train epoch and each validation."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _line(self, trainer, pl_module, what: str, prefix: str) -> None:
        if not self._enabled or trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics: dict[str, Any] = self.get_metrics(trainer, pl_module)
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in metrics.items() if k == "v_num" or k.startswith(prefix))
        print(f"{what} epoch {trainer.current_epoch} step {trainer.global_step}: {shown}", flush=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._line(trainer, pl_module, "train", "train/")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._line(trainer, pl_module, "val  ", "val/")


class SteadyBar(TQDMProgressBar):
    """Lightning's tqdm bar, whose training line is updated at most every ``interval`` seconds (and at an epoch's
    last batch) instead of after every batch: tqdm redraws at most ten times a second anyway, but Lightning
    gathers the shown metrics on every update, which cost RAM's step at batch 20 about 4%."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__()
        self.interval = interval
        self._shown = -math.inf

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        bar = self.train_progress_bar
        if now - self._shown < self.interval and bar is not None and batch_idx + 1 != bar.total:
            return
        self._shown = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
