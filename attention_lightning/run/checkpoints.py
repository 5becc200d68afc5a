"""Checkpoint files: written atomically (``AtomicCheckpointIO``), ``last.ckpt`` as the newest state
(``LastCheckpoint``), found and ranked by global step, read for our metadata without executing pickled code, and
loaded into a model with one line saying why when it does not fit."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from ..signature import parameters
from .. import registry
from .plan import Plan, UserError
from .signals import STOP_SIGNALS, StopSignals, StopTraining, requeue_slurm_job

CKPT_KEY = "attention_lightning"
NEXT_LOG_STEP = "attention_lightning_next_log_step"  # checkpoint key: rows logged at this step or later are newer


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's save, then a rename within the checkpoint's own folder.

    Lightning 2.6's save (``lightning_fabric.utilities.cloud_io._atomic_save``) writes inside an fsspec
    transaction; for a local path fsspec (2026.9) writes to ``tempfile.mkstemp()`` in the *system* temp dir
    and commits with ``shutil.move``. That is a rename only when the temp dir and the run share a filesystem;
    otherwise (a cluster's local /tmp, a tmpfs, runs on a shared disk) the commit copies into the target
    itself, so a copy that fails or is killed half-way (a full disk, SIGKILL) leaves a truncated ``last.ckpt``
    and the old one is gone. Here the move goes to ``<path>.tmp`` next to the target, and ``os.replace`` then
    swaps it in, atomically whatever the temp dir; a failed write removes its ``.tmp``, and an orphan
    (``SIGKILL``) has the name ``remove_tmp`` cleans up on resume. ``tests/test_checkpoint_io.py`` shows the
    difference. Neither save calls fsync: a power cut can still lose the newest checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any | None = None) -> None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp"
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            if not os.path.isfile(tmp):  # Lightning's save swallows a PermissionError (a write-protected folder)
                raise PermissionError(errno.EACCES, "cannot write the checkpoint", tmp)
            os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the complete new one
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at the end of every validation (or train epoch), at the end of training, every
    ``every_n_minutes`` or ``every_n_steps`` during an epoch (0 turns either off), and at the first batch
    boundary after Ctrl-C or SLURM's SIGUSR1, after which training stops (``stop_reason`` says why).

    Mid-epoch saves happen at the start of a batch, once the previous batch's row is logged: the checkpoint
    then holds every finished step and its logged row, and nothing after it.
    """

    def __init__(self, dirpath: str, every_n_minutes: float = 10.0, every_n_steps: int = 0,
                 slurm_requeue: bool = False, signals: StopSignals | None = None) -> None:
        super().__init__(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, enable_version_counter=False)
        self.every_seconds, self.every_n_steps = 60.0 * every_n_minutes, every_n_steps
        self.slurm_requeue = slurm_requeue
        self.stop_reason: str | None = None
        self.requeued: str | None = None
        self._since = time.monotonic()
        self._at_batch_start = False
        self.signals = signals if signals is not None else StopSignals()

    @property
    def path(self) -> str:
        return os.path.join(str(self.dirpath), "last.ckpt")

    def save(self, trainer: pl.Trainer, at_batch_start: bool = False) -> None:
        for logger in trainer.loggers:  # rows up to this step are on disk with the checkpoint
            logger.save()
        self._at_batch_start = at_batch_start
        try:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            self._at_batch_start = False
        self._since = time.monotonic()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        epoch_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
        if "_batches_that_stepped" not in epoch_loop:
            return
        checkpoint[NEXT_LOG_STEP] = epoch_loop["_batches_that_stepped"]  # the first step a resumed run logs
        if self._at_batch_start:  # Lightning adds one on a mid-epoch restore, for saves at a batch's end
            epoch_loop["_batches_that_stepped"] -= 1

    def on_fit_start(self, trainer, pl_module) -> None:
        self._since = time.monotonic()
        self.signals.install([signal.SIGINT] + ([signal.SIGUSR1] if self.slurm_requeue else []))

    def teardown(self, trainer, pl_module, stage) -> None:
        self.signals.restore([signal.SIGINT])  # Ctrl-C after training (e.g. during test) stops at once

    def stop(self, trainer) -> str:
        """Mark training stopped by the recorded signal (asking SLURM to requeue on SIGUSR1); returns why."""
        self.stop_reason = STOP_SIGNALS.get(self.signals.signal, "a stop request")
        if self.signals.signal == signal.SIGUSR1 and trainer.is_global_zero:
            self.requeued = requeue_slurm_job()
        return self.stop_reason

    def _should_skip_saving_checkpoint(self, trainer) -> bool:
        return self.stop_reason is not None or super()._should_skip_saving_checkpoint(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.stop_reason is not None:
            return
        asked = self.signals.signal is not None
        due = (self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0) or (
            self.every_seconds > 0 and time.monotonic() - self._since >= self.every_seconds)
        if trainer.world_size > 1:  # every rank decides the same, or a collective save would hang
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
            due = trainer.strategy.reduce_boolean_decision(due, all=False)
        if (asked or due) and not self._should_skip_saving_checkpoint(trainer) or (
                asked and not os.path.isfile(self.path)):  # a stop before the first step saves that state too
            self.save(trainer, at_batch_start=True)
        if asked:  # stop before this batch: the state on disk is exactly where training stopped
            raise StopTraining(self.stop(trainer))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        """SIGUSR1 during the test after training: stop before this batch and requeue. Training is saved, so the
        requeued run (``--resume=last``) finds it finished and runs only the test."""
        asked = self.signals.signal == signal.SIGUSR1
        if trainer.world_size > 1:  # every rank stops at the same batch
            asked = trainer.strategy.reduce_boolean_decision(asked, all=False)
        if asked:
            raise StopTraining(self.stop(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        """Always: the epoch-end save came before Lightning marked the last epoch completed."""
        if self.stop_reason is None and not trainer.fast_dev_run and trainer.state.fn == "fit":
            self.save(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        """No save: an exception may come mid-step, and a half-updated state is not worth resuming from."""


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` a checkpoint was saved at (-1 for a file that is not a readable checkpoint)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("global_step", -1))
    except Exception:
        return -1


def state_files(run_dir: Path) -> list[Path]:
    """The files a run keeps its state in, readable or not: ``checkpoints/last.ckpt`` and Lightning pre-emption
    ``hpc_ckpt_<n>.ckpt``, newest first; ``*.tmp`` files are never candidates."""
    files = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def newest_state(run_dir: Path) -> Path | None:
    """The run's newest saved state by global step among its readable ``state_files``."""
    scored = [(checkpoint_step(p), p.stat().st_mtime, p) for p in state_files(run_dir)]
    scored = [s for s in scored if s[0] >= 0]
    return max(scored, key=lambda s: (s[0], s[1]))[2] if scored else None


def checkpoint_meta(path: Path) -> dict[str, Any]:
    """Our metadata from a checkpoint, loaded without executing pickled code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = (str(e).strip().splitlines() or ["the file is empty" if path.stat().st_size == 0 else "unreadable"])[0]
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {why[:200]}; it is truncated or not "
                        f"a checkpoint: pass another one") from None
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt:
        raise UserError(f"{path} is not an attention-lightning checkpoint (no {CKPT_KEY!r} entry)")
    return ckpt


def load_model(p: Plan, ckpt: Path) -> pl.LightningModule:
    """The model saved in ``ckpt`` (on the CPU), with the model flags of ``p`` overriding its saved
    hyperparameters; a checkpoint the current model code cannot take fails with one line saying why."""
    cls = registry.get_model(p.model_name).cls
    try:
        return cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True, **p.model_kwargs)
    except Exception as e:
        raise UserError(load_failure(cls, ckpt, p.model_kwargs, e)) from None


def flag_value(value: Any) -> str:
    """``value`` as a user types it after ``--name=``."""
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def load_failure(cls: type, ckpt: Path, given: Mapping[str, Any], error: Exception) -> str:
    """Why ``ckpt`` does not load into ``cls`` and what to pass, in one line: the state-dict keys that differ,
    the arguments its saved hyperparameters lack (added since), and the model flags given that differ from them."""
    what = f"cannot load checkpoint {ckpt} into model {cls.registry_name!r}"
    text = str(error)
    if not (isinstance(error, RuntimeError) and "Error(s) in loading state_dict" in text):
        return f"{what}: {type(error).__name__}: {text.strip().splitlines()[0][:300] if text.strip() else ''}"

    def keys(label: str) -> list[str]:
        return [k for line in text.splitlines() if label in line for k in re.findall(r'"([^"]+)"', line)]

    def brief(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")

    parts = [f"{label} {brief(names)}" for label, names in (
        ("missing keys", keys("Missing key(s) in state_dict")), ("unexpected keys", keys("Unexpected key(s) in state_dict")),
        ("other shapes for", re.findall(r"size mismatch for ([^:\s]+):", text))) if names]
    message = f"{what}: it was written with other model settings ({'; '.join(parts)})"
    saved = (torch.load(ckpt, map_location="cpu", weights_only=True).get("hyper_parameters") or {})
    sig = parameters(cls)
    absent = [n for n in sig if n not in saved and n not in given]
    legacy = {n: v for n, v in cls.legacy_defaults.items() if n in absent and v != sig[n].default}
    differ = {n: v for n, v in given.items() if n in saved and saved[n] != v}
    if legacy:
        fix = " ".join(f"--{n}={flag_value(v)}" for n, v in legacy.items())
        return f"{message}; it was saved before --{', --'.join(legacy)} existed: pass {fix}"
    if differ:
        drop = ", ".join(f"--{n} (the checkpoint has {flag_value(saved[n])})" for n in differ)
        return f"{message}; the flags given differ from the checkpoint's: drop {drop}"
    if absent:
        now = ", ".join(f"--{n}={flag_value(sig[n].default)}" for n in absent)
        return (f"{message}; its saved hyperparameters lack {', '.join(absent)} (added since, now {now}): "
                f"pass the values it was trained with")
    return message
