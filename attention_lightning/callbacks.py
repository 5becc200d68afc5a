"""Attention dashboards: draw a fixed set of validation images with the model's attention and log them.

``AttentionLogger`` runs every ``every_n_steps`` training steps and at the end of each validation epoch.
It takes the first ``num_images`` items of the validation split once (cached on the CPU), calls
``pl_module.attention(batch)`` in eval mode without gradients, draws with ``attention_lightning.viz``
and sends the pictures to each logger of the Trainer:

- ``WandbLogger``: ``log_image`` with one picture and caption (prediction, confidence, label) per image,
  plus ``attention/step_accuracy`` for sequential models; works offline (``WANDB_MODE=offline``).
- ``TensorBoardLogger``: ``add_image`` of the whole grid.
- any logger with a ``log_dir`` (``CSVLogger``): ``<log_dir>/attention/epoch{e}-step{s}.png``.

Rank zero only. The RNG state of the run is saved and restored around the drawing, so logging attention
never changes what a seeded run trains.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, List, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from . import viz
from .attention import Attention

KEY = "attention/images"
ACC_KEY = "attention/step_accuracy"


def first_items(loader: Any, n: int) -> Any:
    """The first ``n`` items of a DataLoader's (map-style) dataset as one batch made by its ``collate_fn``.

    Independent of the loader's batch size and workers; an iterable dataset gives its first batch, cut to ``n``.
    """
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        idx = list(range(min(n, len(dataset))))
        if not idx:
            raise ValueError("the validation split is empty: nothing to draw; use a larger --val_size")
        items = dataset.__getitems__(idx) if hasattr(dataset, "__getitems__") else [dataset[i] for i in idx]
        collate = getattr(loader, "collate_fn", None) or torch.utils.data.default_collate
        return collate(items)
    return _cut(next(iter(loader)), n)


def _cut(batch: Any, n: int) -> Any:
    """The first ``n`` items of a collated batch (tensors, dicts, and lists of tensors or of per-item values)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {k: _cut(v, n) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        if all(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in batch):
            return type(batch)(_cut(v, n) for v in batch)  # a structure: (images, labels)
        return batch[:n]  # per-item values: e.g. question strings
    return batch


def _module_modes(module: torch.nn.Module) -> List[tuple]:
    return [(m, m.training) for m in module.modules()]


def draw_attention(pl_module: pl.LightningModule, batch: Any, trainer: Optional[pl.Trainer] = None) -> Attention:
    """``pl_module.attention(batch)`` in eval mode, without gradients, on the module's device; returns it on the CPU.

    Each submodule's train/eval mode and the torch RNG (CPU and the module's GPU) are restored afterwards.
    """
    modes = _module_modes(pl_module)
    devices = [pl_module.device] if pl_module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            pl_module.eval()
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            precision = getattr(trainer, "precision_plugin", None) if trainer is not None else None
            if precision is not None:
                batch = precision.convert_input(batch)
            context = precision.forward_context() if precision is not None else contextlib.nullcontext()
            with torch.no_grad(), context:
                return pl_module.attention(batch).detach_cpu()
        finally:
            for m, training in modes:
                m.training = training


class AttentionLogger(pl.Callback):
    """Logs the attention of a fixed set of validation images every N training steps and each validation epoch.

    ``every_n_steps=0`` logs only at the end of validation epochs; ``num_images=0`` logs nothing.
    """

    def __init__(self, every_n_steps: int = 500, num_images: int = 8, on_validation: bool = True) -> None:
        for name, value, off in (("viz_every_n_steps", every_n_steps, "logging every N steps"),
                                 ("viz_images", num_images, "attention pictures")):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"--{name}={value!r} must be an integer >= 0 (0 turns {off} off)")
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.on_validation = on_validation
        self._batch: Any = None
        self._failed = False
        self._last_step = -1

    # --- hooks ---------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.log_attention(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.on_validation and not trainer.sanity_checking:
            self.log_attention(trainer, pl_module)

    # --- work ----------------------------------------------------------------------------------
    def log_attention(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw and log now (rank zero; once per global step; nothing when no logger can take a picture)."""
        if not self.num_images or not trainer.is_global_zero or self._failed or trainer.global_step == self._last_step:
            return
        sinks = [lg for lg in trainer.loggers if _kind(lg) is not None]
        if not sinks:
            return
        batch = self._images(trainer)
        if batch is None:
            return
        self._last_step = trainer.global_step
        att = draw_attention(pl_module, batch, trainer)
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        grid = None
        for lg in sinks:
            kind = _kind(lg)
            if kind == "wandb":
                self._to_wandb(lg, att, names, trainer.global_step)
                continue
            if grid is None:
                grid = viz.figure_to_rgb(viz.attention_grid(att, self.num_images, names))
            if kind == "tensorboard":
                lg.experiment.add_image(KEY, grid, global_step=trainer.global_step, dataformats="HWC")
            else:
                out = Path(lg.log_dir) / "attention" / f"epoch{trainer.current_epoch}-step{trainer.global_step}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                from PIL import Image

                Image.fromarray(grid).save(out)

    def _to_wandb(self, lg, att: Attention, names, step: int) -> None:
        rows = viz.attention_rows(att, self.num_images, names)
        lg.log_image(key=KEY, images=rows, caption=viz.captions(viz.subset(att, self.num_images), names), step=step)
        if att.steps > 1 and att.labels is not None:
            acc = viz.figure_to_rgb(viz.step_accuracy_figure(att))
            caption = f"accuracy after each step ({att.images.shape[0]} images)"
            lg.log_image(key=ACC_KEY, images=[acc], caption=[caption], step=step)

    def _images(self, trainer: pl.Trainer) -> Any:
        """The first ``num_images`` validation items, fetched once (None, with one warning, when there are none)."""
        if self._batch is not None:
            return self._batch
        loader = None
        dm = trainer.datamodule
        with torch.random.fork_rng(devices=[]):  # making an iterator draws from torch's RNG
            try:
                if dm is not None and hasattr(dm, "val_dataloader"):
                    loader = dm.val_dataloader()
                else:
                    loaders = trainer.val_dataloaders
                    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
                if loader is None:
                    raise ValueError("the Trainer has no validation dataloader")
                self._batch = first_items(loader, self.num_images)
            except Exception as e:  # a run without validation data still trains; say once why nothing is drawn
                self._failed = True
                rank_zero_warn(f"AttentionLogger: no validation images to draw ({type(e).__name__}: {e}); "
                               f"attention pictures are off for this run")
                return None
        return self._batch


def _kind(logger: Any) -> Optional[str]:
    """'wandb', 'tensorboard', 'files' (a logger with a log_dir, e.g. CSV) or None (cannot take pictures)."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
    from pytorch_lightning.loggers.logger import DummyLogger

    if isinstance(logger, DummyLogger):
        return None
    if isinstance(logger, WandbLogger):
        return "wandb"
    if isinstance(logger, TensorBoardLogger):
        return "tensorboard"
    return "files" if getattr(logger, "log_dir", None) else None
