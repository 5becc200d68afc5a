"""Cheap logging of training steps: what ``self.log`` shows, at a fraction of its per-call cost.

Lightning's ``self.log`` costs a few hundred microseconds a call (checks, device moves and bookkeeping of
its result collection), which was a third of RAM's step at batch 20. ``AttentionModel.log`` hands the
scalars logged during a training step to a ``TrainLog`` instead: each call only keeps the value; at the end
of the step all of them are added, in one vector operation on the device, to running sums weighted by
batch size (the epoch means); the step values go to Lightning only on the steps its logger writes
(``log_every_n_steps``), and the epoch means once at the end of the epoch. Keys follow Lightning's naming
(``name_step``/``name_epoch`` when logged on both, and the plain name for callbacks only), so metrics.csv,
the progress bar and ``trainer.callback_metrics`` carry the same keys; the progress bar's step values refresh when the logger
writes rather than every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.data import extract_batch_size
from torch import Tensor


@dataclass(frozen=True)
class Key:
    """How one logged name is shown: progress bar, logger, per step, per epoch."""
    name: str
    prog_bar: bool
    logger: bool | None  # as given to ``self.log`` (None: to the logger if there is one)
    on_step: bool
    on_epoch: bool

    def step_name(self) -> str:
        return f"{self.name}_step" if self.on_epoch else self.name

    def epoch_name(self) -> str:
        return f"{self.name}_epoch" if self.on_step else self.name


class TrainLog:
    """Scalars of the current training step, and their batch-size-weighted sums over the epoch."""

    def __init__(self) -> None:
        self.columns: dict[Key, int] = {}
        self.pending: list[tuple[Key, Tensor, int | None]] = []
        self.sums: Tensor | None = None  # (columns,) sum of value x batch size over the epoch, on the device
        self.weights: list[float] = []   # per column, the sum of batch sizes (host numbers: no device work)
        self._index: dict[tuple[int, ...], Tensor] = {}

    def add(self, key: Key, value: Tensor, batch_size: int | None) -> None:
        if value.requires_grad:
            value = value.detach()
        self.pending.append((key, value if value.dim() == 0 else value.reshape(()), batch_size))

    def end_step(self, module: pl.LightningModule, batch: Any, emit: bool) -> None:
        """Add this step's values to the epoch sums; send them to Lightning if ``emit`` (the logger writes now)."""
        if not self.pending:
            return
        default = None
        cols, sizes = [], []
        for key, _, size in self.pending:
            col = self.columns.get(key)
            if col is None:
                col = self.columns[key] = len(self.columns)
                self.weights.append(0.0)
            if size is None:
                default = default if default is not None else extract_batch_size(batch)
                size = default
            self.weights[col] += size
            cols.append(col)
            sizes.append(size)
        vals = torch.stack([value for _, value, _ in self.pending]).float()  # (K,)
        if len(set(sizes)) > 1:
            vals = vals * torch.tensor(sizes, dtype=vals.dtype, device=vals.device)
            scale = 1
        else:
            scale = sizes[0]
        idx = self._index.get(tuple(cols))
        if idx is None or idx.device != vals.device:
            idx = self._index[tuple(cols)] = torch.tensor(cols, device=vals.device)
        if self.sums is None or self.sums.shape[0] < len(self.columns) or self.sums.device != vals.device:
            self.sums = self._grown(vals.device)
        self.sums.index_add_(0, idx, vals, alpha=scale)
        if emit:
            for (key, value, _), size in zip(self.pending, sizes):
                if key.on_step:
                    pl.LightningModule.log(module, key.step_name(), value, prog_bar=key.prog_bar, logger=key.logger,
                                           on_step=True, on_epoch=False, batch_size=size)
                    if key.on_epoch:  # Lightning also keeps the plain name for callbacks (e.g. a monitor)
                        pl.LightningModule.log(module, key.name, value, logger=False, on_step=True, on_epoch=False,
                                               batch_size=size)
        self.pending.clear()

    def end_epoch(self, module: pl.LightningModule) -> None:
        """Log the epoch mean of every key logged per epoch, and start the next epoch's sums."""
        if self.sums is None:
            return
        means = self.sums / self.sums.new_tensor([max(w, 1.0) for w in self.weights])  # (columns,)
        trainer = module._trainer
        sync = trainer is not None and trainer.world_size > 1  # the run's epoch mean: the mean over ranks
        for key, col in self.columns.items():
            if key.on_epoch and self.weights[col] > 0:
                pl.LightningModule.log(module, key.epoch_name(), means[col], prog_bar=key.prog_bar,
                                       logger=key.logger, on_step=False, on_epoch=True, batch_size=1,
                                       sync_dist=sync)
                if key.on_step:  # after the epoch, Lightning's plain name holds the epoch value
                    pl.LightningModule.log(module, key.name, means[col], logger=False, on_step=False, on_epoch=True,
                                           batch_size=1, sync_dist=sync)
        self.sums = None
        self.weights = [0.0] * len(self.weights)

    def state_dict(self) -> dict[str, Any]:
        """The epoch sums so far (a checkpoint taken mid-epoch keeps them; loadable with ``weights_only``)."""
        keys = [[k.name, k.prog_bar, k.logger, k.on_step, k.on_epoch] for k in self.columns]
        sums = self.sums.detach().cpu() if self.sums is not None else None
        return {"keys": keys, "sums": sums, "weights": list(self.weights)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch sums of ``state_dict``: the epoch means after a resume count the batches before it."""
        self.columns = {Key(*k): i for i, k in enumerate(state["keys"])}
        self.sums = state["sums"].clone() if state["sums"] is not None else None
        self.weights = [float(w) for w in state["weights"]]
        self.pending.clear()
        self._index = {}

    def _grown(self, device: torch.device) -> Tensor:
        sums = torch.zeros(len(self.columns), device=device)
        if self.sums is not None:
            sums[: self.sums.shape[0]] = self.sums.to(device)
        return sums


class TrainLogFlush(pl.Callback):
    """Ends each training step's and epoch's ``TrainLog`` of the module, whatever hooks the model overrides."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        emit = trainer._logger_connector.should_update_logs or bool(trainer.fast_dev_run)
        pl_module.train_log.end_step(pl_module, batch, emit)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.train_log.end_epoch(pl_module)
