"""Shared measuring for the benchmarks: a real Trainer step timed by a callback, and peak memory."""
from __future__ import annotations

import ast
import logging
import os
import resource
import warnings
import time
from typing import Any

import pytorch_lightning as pl
import torch

from attention_lightning.run import commands as experiment

# benchmarks print tables; keep Lightning's banners and hints out of them
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")
os.environ.setdefault("ATTENTION_LIGHTNING_OFFLINE", "1")


class StepTimer(pl.Callback):
    """Wall time of each training step (forward, backward, optimizer; data loading excluded) after warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t0 = warmup, [], 0.0

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t0)


def key_values(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` command-line pairs as a dict; values are Python literals where they parse, else strings."""
    out: dict[str, Any] = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def measure_training(flags: dict[str, Any], steps: int = 10, warmup: int = 3, compile: bool = False,
                     datamodule: pl.LightningDataModule | None = None) -> dict[str, float]:
    """Median training step time and images/s of the model the flags describe, through ``Trainer.fit``."""
    p = experiment.plan({"logger": "none", **flags})
    pl.seed_everything(0, verbose=False)
    dm = datamodule or experiment.build_datamodule(p)
    model = experiment.build_model(p, dm)
    if compile:
        # the model's own computation (forward and loss), as `cli.py fit --compile=true`; logging and torchmetrics
        # stay eager, as a compiled training_step would recompile on every metric update
        model.compile_step()
    timer = StepTimer(warmup)
    trainer_kwargs = {k: v for k, v in p.trainer_kwargs.items()
                      if k in ("accelerator", "devices", "precision")}
    trainer = pl.Trainer(max_steps=warmup + steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[timer], **trainer_kwargs)
    trainer.fit(model, datamodule=dm)
    times = sorted(timer.times)
    step = times[len(times) // 2]
    batch = getattr(dm, "batch_size", p.data_kwargs.get("batch_size", 1))
    return {"step_ms": 1000 * step, "images_per_s": batch / step, "batch_size": batch,
            "peak_mem_mb": peak_memory_mb(model.device)}
