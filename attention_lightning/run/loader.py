"""The train loader made resumable at any batch: the epoch's order is fixed by (seed, epoch), and a checkpoint
holds the batch to continue from and the RNG states, so a resumed run draws the same batches (``TrainStream``)."""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, RandomSampler, Sampler


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step or a train item may draw from (weights-only loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_rest": [int(pos), int(has_gauss), float(gauss)], "python": random.getstate()}
    # is_initialized alone: once Lightning is imported, is_available asks NVML (a library load) on every call,
    # which cost more than the rest of this function, which runs before every training batch
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def world() -> tuple:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler):
    """Indices of one epoch: a permutation fixed by (seed, epoch) when shuffling; under DDP this rank's share
    (padded by repeating the first indices to a multiple of the world size, as DistributedSampler does); from
    item ``start`` on."""

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.epoch, self.start = 0, 0

    def order(self) -> np.ndarray:
        idx = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        rank, size = world()
        if size > 1:
            idx = np.resize(idx, -(-self.n // size) * size)[rank::size]  # np.resize repeats from the start
        return idx

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start:].tolist())

    def __len__(self) -> int:
        return -(-self.n // world()[1])


class ResumableLoader:
    """The datamodule's train DataLoader, re-made over an ``EpochSampler`` and able to start at any batch."""

    def __init__(self, loader: DataLoader, seed: int, stream: TrainStream) -> None:
        self.sampler = EpochSampler(len(loader.dataset), isinstance(loader.sampler, RandomSampler), seed)
        workers = loader.num_workers
        self.loader = DataLoader(
            loader.dataset, batch_size=loader.batch_size, sampler=self.sampler, num_workers=workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
            persistent_workers=loader.persistent_workers, worker_init_fn=loader.worker_init_fn,
            prefetch_factor=loader.prefetch_factor if workers else None, timeout=loader.timeout,
        )
        self.stream = stream
        self.epoch = 0
        self.before: dict[int, dict[str, Any]] = {}  # batch index -> RNG states just before it was fetched

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        resume, self.stream.pending = self.stream.pending, None
        trainer = self.stream.trainer
        self.epoch = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0
        start = 0
        if resume is not None and resume.get("next") is not None:  # mid-epoch
            self.epoch, start = resume["epoch"], resume["next"]
        elif resume is not None and resume.get("rng_after") is not None:  # a new epoch
            set_rng_state(resume["rng_after"])
        self.sampler.epoch, self.sampler.start = self.epoch, start * self.loader.batch_size
        self.before = {}
        batches = iter(self.loader)  # draws the loader's base seed from torch's RNG
        if resume is not None and resume.get("next") is not None:
            set_rng_state(resume["rng_fetch"])
        i = start
        while True:
            before = rng_state()
            try:
                batch = next(batches)
            except StopIteration:
                return
            if i == start and resume is not None and resume.get("next") is not None:
                set_rng_state(resume["rng_after"])  # as if the batches before had been trained on
            self.before = {k: v for k, v in self.before.items() if k >= i - 2}
            self.before[i] = before
            i += 1
            yield batch

    def state(self, next_batch: int, epoch_done: bool) -> dict[str, Any]:
        """Where to continue: batch ``next_batch`` of this epoch (or the next epoch), with the RNG states from
        just before it and the batch after it were fetched (Lightning fetches one batch ahead)."""
        if epoch_done:
            return {"epoch": self.epoch + 1, "next": None, "rng_fetch": None, "rng_after": rng_state()}
        if next_batch not in self.before:
            return {}
        return {"epoch": self.epoch, "next": next_batch, "rng_fetch": self.before[next_batch],
                "rng_after": self.before.get(next_batch + 1) or rng_state()}


class _TrainLoaders:
    """``dm.train_dataloader`` replaced by one that wraps the original's loader (picklable, for ddp_spawn)."""

    def __init__(self, make: Any, stream: TrainStream) -> None:
        self.make, self.stream = make, stream
        self.__wrapped__ = make  # Lightning's is_overridden looks through to the datamodule's method

    def __call__(self) -> ResumableLoader:
        self.stream.loader = ResumableLoader(self.make(), self.stream.seed, self.stream)
        return self.stream.loader


class TrainStream(Callback):
    """Makes ``dm``'s train loader a ``ResumableLoader`` and keeps its position (and the RNGs) in checkpoints.

    Exact for ``num_workers=0`` (items draw from the main process's RNG); with workers the order of items is
    still exact (nothing repeated or skipped) but workers' random draws restart from their own seeds.
    """

    def __init__(self, dm: pl.LightningDataModule, seed: int) -> None:
        self.seed, self.trainer, self.loader = seed, None, None
        self.pending: dict[str, Any] | None = None
        dm.train_dataloader = _TrainLoaders(dm.train_dataloader, self)  # this datamodule instance only

    def setup(self, trainer, pl_module, stage) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self.loader is None or self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.completed  # batches of this epoch trained
        state = self.loader.state(done, done >= self.trainer.num_training_batches)
        train_log = getattr(self.trainer.lightning_module, "train_log", None)
        if state.get("next") is not None and train_log is not None:  # mid-epoch: the epoch means so far
            state["train_log"] = train_log.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = dict(state_dict) if state_dict else None
        train_log = getattr(self.trainer.lightning_module, "train_log", None) if self.trainer is not None else None
        if self.pending and self.pending.get("train_log") and train_log is not None:
            train_log.load_state_dict(self.pending["train_log"])
