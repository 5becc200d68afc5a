"""The smallest run of every registered model: flags for a few-second CPU fit.

Tests that go over the registry (checkpoints, DDP, dashboards) take their flags from here; a model
missing from this table fails ``test_every_model_has_tiny_flags`` instead of being skipped.
"""
from __future__ import annotations

import json
import os
from typing import Any

import pytorch_lightning as pl

DIGITS = {"data": "cluttered_mnist", "digits": "embedded", "train_size": 32, "val_size": 16, "test_size": 16,
          "batch_size": 8}

TINY_FLAGS: dict[str, dict[str, Any]] = {
    "dham": {**DIGITS, "model": "dham", "variant": "translated", "canvas_size": 40, "head_channels": [4],
             "classifier_channels": [8, 8], "classifier_hidden": 16},
    "ram": {**DIGITS, "model": "ram", "variant": "translated", "canvas_size": 40, "glimpses": 3,
            "glimpse_size": 8, "depth": 2},
    "pham": {**DIGITS, "model": "pham", "variant": "translated", "canvas_size": 32, "channels": 3, "phase": 1},
    "han": {"model": "han", "data": "vqa_scenes", "batch_size": 8},
    "cnn": {**DIGITS, "model": "cnn", "variant": "translated", "canvas_size": 40, "conv_channels": [4, 8], "hidden": 16},
}

COMMON = {"logger": "csv", "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
          "viz_images": 0}


def tiny_flags(model: str, **extra: Any) -> dict[str, Any]:
    return {**TINY_FLAGS[model], **COMMON, **extra}


class RankCounts(pl.Callback):
    """Writes, per rank, how many validation predictions were right in the last epoch (``rank<r>.json``).

    Module-level in an importable module so ``ddp_spawn`` can pickle it into the worker processes.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.correct, self.total = 0, 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.correct, self.total = 0, 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.correct += int((outputs["preds"] == outputs["targets"]).sum())
        self.total += int(outputs["targets"].numel())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        path = os.path.join(self.out_dir, f"rank{trainer.global_rank}.json")
        with open(path, "w") as f:
            json.dump({"correct": self.correct, "total": self.total, "epoch": trainer.current_epoch}, f)


class RankTestCounts(pl.Callback):
    """Writes, per rank, the indices of the test items it predicted (``test<r>.json``), read from the sampler."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.items = 0

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.items = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.items += int(outputs["targets"].numel())

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        loader = trainer.test_dataloaders
        sampler = getattr(loader, "sampler", None)
        with open(os.path.join(self.out_dir, f"test{trainer.global_rank}.json"), "w") as f:
            json.dump({"items": self.items, "indices": list(iter(sampler)) if sampler is not None else None}, f)
