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
    """Lightning's tqdm bar, whose training line is redrawn at most every ``interval`` seconds (and at an epoch's
    last batch) instead of after every batch, and whose metrics are gathered at most every ``metrics_interval``
    seconds: tqdm redraws at most ten times a second anyway, and Lightning gathers the shown metrics on every
    update, which cost RAM's step at batch 20 about 4%. The training values shown change only when the logger
    writes (``TrainLog``), so gathering them once a second shows the same."""

    def __init__(self, interval: float = 0.1, metrics_interval: float = 1.0) -> None:
        super().__init__()
        self.interval, self.metrics_interval = interval, metrics_interval
        self._shown = self._gathered = -math.inf

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        now = time.monotonic()
        last = batch_idx + 1 == bar.total
        if now - self._shown < self.interval and not last:
            return
        self._shown = now
        bar.n = batch_idx + 1
        if now - self._gathered >= self.metrics_interval or last:
            self._gathered = now
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()
