"""Attention dashboards: draw a fixed set of validation images with the model's attention and log them.

``AttentionLogger`` runs every ``every_n_steps`` training steps and once per validation epoch (with the weights
that epoch validates).
It takes the first ``num_images`` items of the validation split once (cached on the CPU), calls
``pl_module.attention(batch)`` in eval mode without gradients, draws what the run's loggers keep and logs it
at once, on the training thread: ``viz`` draws pixels directly (tens of milliseconds for a grid of eight images),
so a worker process would save less than it costs. Each logger gets:

- ``WandbLogger`` (offline too, ``WANDB_MODE=offline``), one history row per drawing:
  ``attention/images``: each example as a ``wandb.Image`` with every box as an overlay (one class per step,
  captioned with the prediction at that step and scored with its probabilities) and each map as a mask per
  step, so steps and maps can be switched on and off; ``attention/table``: a ``wandb.Table`` with the image,
  label, prediction, confidence, correctness and, for sequential models, the prediction after each step;
  ``attention/steps``: the glimpse sequence as an animated GIF (``viz.step_frames``); and
  ``attention/step_accuracy`` for sequential models.
- ``TensorBoardLogger``: ``add_image`` of the whole grid (``viz.attention_grid``).
- any logger with a ``log_dir`` (``CSVLogger``): ``<log_dir>/attention/epoch{e}-step{s}.png``, the same grid.

At fit start every logger also gets the data source's resolved facts as hyperparameters under ``data_facts``
(``log_run_config``). Rank zero only. The RNG state of the run is saved and restored around the drawing, so
logging attention never changes what a seeded run trains.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from ..attention import Attention, draw_attention, first_items
from .draw import attention_grid, step_accuracy_figure, step_frames
from .files import png_bytes, save_gif
from .panels import subset
from .wandb_media import wandb_examples, wandb_table

KEY = "attention/images"
ACC_KEY = "attention/step_accuracy"
TABLE_KEY = "attention/table"
STEPS_KEY = "attention/steps"


def render(att: Attention, num_images: int, class_names: Sequence[str] | None,
           wants: Sequence[str]) -> dict[str, Any]:
    """Draw what ``wants`` names: ``grid`` (RGB array of ``attention_grid``), ``grid_png`` (the same,
    PNG-encoded), ``accuracy`` (RGB of ``step_accuracy_figure``), ``steps_gif`` (GIF bytes of
    ``step_frames``)."""
    out: dict[str, Any] = {}
    if "grid" in wants or "grid_png" in wants:
        grid = np.asarray(attention_grid(att, num_images, class_names))  # (H, W, 3)
        if "grid" in wants:
            out["grid"] = grid
        if "grid_png" in wants:
            out["grid_png"] = png_bytes(grid)
    if "accuracy" in wants:
        out["accuracy"] = np.asarray(step_accuracy_figure(att))
    if "steps_gif" in wants:
        gif = io.BytesIO()
        save_gif(step_frames(att, num_images, class_names), gif)
        out["steps_gif"] = gif.getvalue()
    return out


# --- the run record ------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Paths, tuples and numpy scalars as YAML/JSON-friendly values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_facts(datamodule: Any) -> dict[str, Any] | None:
    """The resolved facts of a data source for the run record: its ``facts()`` (``DataFacts``: sizes, classes
    and provenance such as digit source, dataset path and split sizes) flattened to one mapping, or, for a
    datamodule without ``facts()``, what it exposes (classes, dims, digit source, data dir, split sizes)."""
    if datamodule is None:
        return None
    facts = getattr(datamodule, "facts", None)
    if callable(facts):
        f = facts()
        out = {k: v for k, v in f.as_dict().items() if k != "provenance" and v is not None}
        out.update(f.provenance)
        return _plain(out)
    out: dict[str, Any] = {}
    hparams = getattr(datamodule, "hparams", {}) or {}
    for name in ("num_classes", "dims", "class_names", "digit_source", "data_dir"):
        value = getattr(datamodule, name, None)
        value = hparams.get(name) if value is None else value
        if value is not None:
            out[name] = value
    sizes = {split: len(ds) for split in ("train", "val", "test")
             for ds in [getattr(datamodule, f"{split}_set", None)] if ds is not None and hasattr(ds, "__len__")}
    if sizes:
        out["split_sizes"] = sizes
    return _plain(out) or None


def log_run_config(trainer: pl.Trainer) -> dict[str, Any] | None:
    """Give every logger the datamodule's resolved facts as hyperparameters under ``data_facts`` (the wandb run
    config, csv's hparams.yaml); returns them (None without a datamodule)."""
    facts = run_facts(getattr(trainer, "datamodule", None))
    if facts is None or not trainer.is_global_zero:
        return facts
    for lg in trainer.loggers:
        lg.log_hyperparams({"data_facts": facts})
    return facts


# --- the callback --------------------------------------------------------------------------------
class AttentionLogger(pl.Callback):
    """Logs the attention of a fixed set of validation images every N training steps and each validation epoch.

    ``every_n_steps=0`` logs only once per validation epoch; ``num_images=0`` logs nothing.
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
    def on_fit_start(self, trainer, pl_module) -> None:
        log_run_config(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.log_attention(trainer, pl_module)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        # the weights a validation epoch sees are fixed: drawn at its start, the picture is the one at its end
        if self.on_validation and not trainer.sanity_checking:
            self.log_attention(trainer, pl_module)

    # --- work ----------------------------------------------------------------------------------
    def log_attention(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw and log now (rank zero; once per global step; nothing when no logger can take a picture)."""
        if not self.num_images or not trainer.is_global_zero or self._failed or trainer.global_step == self._last_step:
            return
        sinks = [(lg, _kind(lg)) for lg in trainer.loggers if _kind(lg) is not None]
        if not sinks:
            return
        batch = self._images(trainer)
        if batch is None:
            return
        self._last_step = step = trainer.global_step
        att = subset(draw_attention(pl_module, batch, trainer), self.num_images)
        names = getattr(trainer.datamodule, "class_names", None) if trainer.datamodule is not None else None
        names = list(names) if names is not None else None
        kinds = {kind for _, kind in sinks}
        wants = {"grid"} if "tensorboard" in kinds else set()
        if "files" in kinds:
            wants.add("grid_png")
        if "wandb" in kinds and att.steps > 1:
            wants.add("steps_gif")
            if att.labels is not None:
                wants.add("accuracy")
        pictures = render(att, self.num_images, names, sorted(wants))
        for lg, kind in sinks:
            if kind == "wandb":
                _to_wandb(lg, att, names, step, pictures)
            elif kind == "tensorboard":
                lg.experiment.add_image(KEY, pictures["grid"], global_step=step, dataformats="HWC")
            else:
                out = Path(lg.log_dir) / "attention" / f"epoch{trainer.current_epoch}-step{step}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(".png.tmp")
                tmp.write_bytes(pictures["grid_png"])
                tmp.replace(out)  # a reader never sees half a picture

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


def _to_wandb(lg: Any, att: Attention, names: Sequence[str] | None, step: int, pictures: dict[str, Any]) -> None:
    import wandb

    row: dict[str, Any] = {KEY: wandb_examples(att, names), TABLE_KEY: wandb_table(att, names)}
    n = att.images.shape[0]
    if "steps_gif" in pictures:
        row[STEPS_KEY] = wandb.Video(io.BytesIO(pictures["steps_gif"]), format="gif",
                                     caption=f"{n} images, one frame per step")
    if "accuracy" in pictures:
        row[ACC_KEY] = wandb.Image(pictures["accuracy"], caption=f"accuracy after each step ({n} images)")
    lg.log_metrics(row, step=step)


def _kind(logger: Any) -> str | None:
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
