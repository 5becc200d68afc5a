"""The ``pl.Trainer`` a run trains with: its checkpoint callbacks, the run's metadata in every checkpoint
(``RunInfo``), the logger, attention pictures and progress lines."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from .checkpoints import AtomicCheckpointIO, CKPT_KEY, LastCheckpoint
from .loggers import check_wandb_credentials, make_logger
from .plan import Plan, UserError
from .signals import StopSignals


def callbacks_for(run_dir: Path, extra: list[Callback], every_n_minutes: float = 10.0, every_n_steps: int = 0,
                  slurm_requeue: bool = False, signals: StopSignals | None = None) -> list[Callback]:
    """``best-*.ckpt`` (top ``val/acc``) and ``last.ckpt`` (the newest state, see ``LastCheckpoint``)."""
    best = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"), filename="best-epoch{epoch}-step{step}", monitor="val/acc",
        mode="max", save_last=False, save_top_k=1, auto_insert_metric_name=False,
    )
    last = LastCheckpoint(str(run_dir / "checkpoints"), every_n_minutes, every_n_steps, slurm_requeue, signals)
    return [*extra, best, last]  # checkpoint callbacks run last, in this order: last.ckpt records the best


class RunInfo(Callback):
    """Stores which model and datamodule (by registry name, with the flags that made them) made a checkpoint,
    and records the resolved digit source (not ``auto``) in the run's hyperparameters."""

    def __init__(self, p: Plan) -> None:
        trainer_flags = {k: v for k, v in p.trainer_kwargs.items() if k != "default_root_dir"}
        self.meta = {"model": p.model_name, "data": p.data_name, "data_kwargs": dict(p.data_kwargs),
                     "flags": {"model": dict(p.model_kwargs), "data": dict(p.data_kwargs), "trainer": trainer_flags,
                               "seed": p.resolved["seed"]}}

    def setup(self, trainer, pl_module, stage) -> None:
        dm = trainer.datamodule  # set up by now; its hparams are logged next
        described = getattr(dm, "digit_source", None) or ""  # DigitSet.description: "<source> (<counts>)"
        used = described.split(" ", 1)[0]
        if used in ("mnist", "embedded") and getattr(dm, "hparams", {}).get("digits") == "auto":
            dm.hparams["digits"] = used
            initial = getattr(dm, "_hparams_initial", None)  # what Lightning hands to the loggers
            if initial is not None:
                initial["digits"] = used

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[CKPT_KEY] = {**self.meta, "world_size": trainer.world_size}


def make_trainer(p: Plan, run_dir: Path, extra_callbacks: list[Callback] | None = None,
                 signals: StopSignals | None = None) -> pl.Trainer:
    kwargs = dict(p.trainer_kwargs)
    kwargs.setdefault("default_root_dir", str(run_dir))
    info = RunInfo(p)
    extra = [info, *(extra_callbacks or [])]
    plugins: list[Any] = [AtomicCheckpointIO()]
    from lightning_fabric.plugins.environments import SLURMEnvironment
    slurm = SLURMEnvironment.detect()
    if slurm:  # pre-emption is handled by LastCheckpoint: save at a batch boundary, then requeue
        plugins.append(SLURMEnvironment(auto_requeue=False))
    own = p.resolved  # the flags of `fit` that build the Trainer's logger and callbacks (see flags.COMMANDS)
    if own["logger"] == "wandb":
        check_wandb_credentials()
    if own["logger"] != "none":  # attention pictures for the logger (none: no callback, no cost)
        from ..viz.logger import AttentionLogger
        try:
            extra.append(AttentionLogger(own["viz_every_n_steps"], own["viz_images"]))
        except ValueError as e:
            raise UserError(str(e)) from None
    if kwargs.get("enable_progress_bar", True):
        from .progress import EpochLines, SteadyBar
        # a log file gets one line per epoch, not a bar's redraws; a terminal a bar redrawn at most 10 times a second
        extra.append(SteadyBar() if sys.stdout.isatty() else EpochLines())
    callbacks = callbacks_for(run_dir, extra, own["checkpoint_every_n_minutes"], own["checkpoint_every_n_steps"],
                              slurm_requeue=slurm, signals=signals)
    try:
        return pl.Trainer(
            logger=make_logger(own["logger"], run_dir, run_dir.parent.name),
            callbacks=callbacks,
            plugins=plugins,
            **kwargs,
        )
    except (ValueError, TypeError, MisconfigurationException, RuntimeError, ImportError) as e:  # --devices=0, tpu
        raise UserError(f"invalid Trainer flags: {str(e).strip().splitlines()[0]}") from None
