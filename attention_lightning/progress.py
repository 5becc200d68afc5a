"""Progress for logs: when stdout is not a terminal, one line per train epoch and per validation instead of
a progress bar's redraws (which pile up as thousands of lines in a log file)."""
from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import ProgressBar


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
