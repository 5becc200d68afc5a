"""The thin Lightning layer every paper's model shares: metrics per stage, loss-term logging, the
non-finite-loss guard, the optimizer, and the attention interface the dashboards call.

A model implements ``loss_terms`` (named losses and final logits for a batch) and ``attention``; it
overrides ``validation_step``/``test_step`` only to log extra curves (calling ``super()``).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Tuple

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ..attention import Attention


class ConfigError(ValueError):
    """A user-fixable problem a model finds after construction (e.g. in ``setup``); the CLI prints one line."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class AttentionModel(pl.LightningModule):
    """Base of every registered model. Batches are ``(images, labels)`` unless ``targets`` is overridden."""

    registry_name: str = "?"

    def __init__(self, num_classes: int, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    # --- what a model implements -------------------------------------------------------------
    def loss_terms(self, batch: Any, stage: str) -> Tuple[Dict[str, Tensor], Tensor]:
        """Named scalar losses (summed into the total) and the final logits (B, K) for ``batch``."""
        raise NotImplementedError

    def attention(self, batch: Any) -> Attention:
        """What the model looked at for ``batch`` (eval behaviour; no gradients needed)."""
        raise NotImplementedError

    def targets(self, batch: Any) -> Tensor:
        """The ground-truth labels (B,) of ``batch``."""
        return batch[1]

    def inputs(self, batch: Any) -> Any:
        return batch[0]

    # --- shared wiring -----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # Every rank was seeded alike (pl.seed_everything); give each its own stream so stochastic parts
        # (sampled locations, random glimpses, z samples, on-the-fly train data) differ across ranks while a
        # rerun with the same --seed repeats exactly. Weights are already synced by the strategy.
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is not None and self.trainer.world_size > 1:
            torch.manual_seed(int(seed) + 7919 * self.global_rank)

    def _total(self, terms: Dict[str, Tensor], stage: str, batch_size: int) -> Tensor:
        total = sum(terms.values())
        if not torch.isfinite(total):
            bad = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items() if not torch.isfinite(v))
            raise NonFiniteLossError(
                f"non-finite {stage} loss at global step {self.global_step} (epoch {self.current_epoch}): {bad}. "
                f"Nothing was saved for this step; lower --lr, or use --precision=32 if running in half precision."
            )
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value.detach(), on_step=stage == "train", on_epoch=True,
                     sync_dist=stage != "train", batch_size=batch_size)
        self.log(f"{stage}/loss", total.detach(), prog_bar=stage != "test", on_step=stage == "train", on_epoch=True,
                 sync_dist=stage != "train", batch_size=batch_size)
        return total

    def _step(self, batch: Any, stage: str) -> Dict[str, Tensor]:
        terms, logits = self.loss_terms(batch, stage)
        targets = self.targets(batch)
        loss = self._total(terms, stage, batch_size=len(targets))
        metric = getattr(self, f"{stage}_acc")
        metric(logits.detach(), targets)
        self.log(f"{stage}/acc", metric, prog_bar=True, on_step=stage == "train", on_epoch=True)
        return {"loss": loss, "preds": logits.detach().argmax(-1), "targets": targets}

    def training_step(self, batch: Any, batch_idx: int) -> Dict[str, Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Dict[str, Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Dict[str, Tensor]:
        return self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    @staticmethod
    def check_positive(**values: float) -> None:
        for name, v in values.items():
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise ValueError(f"--{name}={v!r} must be a positive number")
