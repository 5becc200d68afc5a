"""Files a run writes, made safe to kill at any moment and to continue exactly.

- ``AtomicCheckpointIO``: a checkpoint is written to ``<path>.tmp`` and renamed over ``<path>``, so a crash
  (SIGKILL, pre-emption, a full disk) leaves either the old checkpoint or the new one, never half of one, also
  where Lightning's own save would copy in place (a system temp dir on another filesystem); a failed write
  removes its ``.tmp``.
- ``LastCheckpoint``: ``last.ckpt`` is the newest state: end of every validation (or train epoch), end of
  training, every ``every_n_minutes``/``every_n_steps`` mid-epoch, and on Ctrl-C / SLURM's SIGUSR1 (saved at
  the next batch boundary, then training stops).
- ``TrainStream``: the train loader made resumable at any batch: the epoch's order is fixed by (seed, epoch),
  and a checkpoint holds the batch to continue from and the RNG states, so a resumed run draws the same batches.
- ``AppendingCSVLogger``: a CSV logger that keeps a resumed run's rows (``trim_metrics`` first drops the rows
  logged after the checkpoint) and never rewrites the run's ``hparams.yaml``.
- ``claim_run_dir``: ``version_<k>`` taken with an atomic ``mkdir``, so two runs never share a folder.
"""
from __future__ import annotations

import csv
import errno
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from torch.utils.data import DataLoader, RandomSampler, Sampler

NEXT_LOG_STEP = "attention_lightning_next_log_step"  # checkpoint key: rows logged at this step or later are newer
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGUSR1: "SLURM pre-emption (SIGUSR1)"}


class StopTraining(Exception):
    """Raised at a batch boundary after ``last.ckpt`` was saved on Ctrl-C or SIGUSR1: nothing more is trained."""


class StopSignals:
    """Records the first Ctrl-C / SIGUSR1 for ``LastCheckpoint``, which stops at the next batch boundary; a second
    Ctrl-C stops at once (``KeyboardInterrupt``). Installed for SIGUSR1 before the run starts (a pre-emption during
    start-up is kept for the first batch), for SIGINT once training starts; ``restore`` puts the old handlers back."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self, signals: list[int]) -> None:
        try:
            for s in signals:
                if s not in self._previous:
                    self._previous[s] = signal.signal(s, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        if self.signal is None or signum == signal.SIGUSR1:
            self.signal = signum

    def restore(self, signals: list[int] | None = None) -> None:
        for s in [s for s in self._previous if signals is None or s in signals]:
            signal.signal(s, self._previous.pop(s))


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


class RunStart(Callback):
    """The moment a run may touch its folder: once every check has passed and the checkpoint is restored (the
    start of training), a resumed run drops its killed writes (``*.tmp``) and the ``metrics.csv`` rows logged
    after its checkpoint (from step ``first_row``), on rank zero. ``started`` tells a failed start from a run."""

    def __init__(self, run_dir: Path, first_row: int | None = None) -> None:
        self.run_dir, self.first_row = run_dir, first_row
        self.started = False

    def on_train_start(self, trainer, pl_module) -> None:
        if self.first_row is not None and trainer.is_global_zero:
            remove_tmp(self.run_dir)
            trim_metrics(self.run_dir / "metrics.csv", self.first_row)
        self.started = True


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


def requeue_slurm_job() -> str:
    """Ask SLURM to requeue this job (what Lightning's SLURM plugin does); returns what happened, in words."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    if not re.fullmatch(r"[0-9_]+", job):
        return f"not requeued: SLURM_JOB_ID={job!r} is not a job id"
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"not requeued: scontrol failed ({e})"
    return f"requeued SLURM job {job}" if result.returncode == 0 else \
        f"not requeued: scontrol requeue {job} exited {result.returncode}"


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


def remove_tmp(folder: Path) -> None:
    """Orphan ``*.tmp`` files of an interrupted write."""
    for p in folder.rglob("*.tmp") if folder.is_dir() else []:
        p.unlink(missing_ok=True)


def claim_run_dir(base: Path, key: str = "") -> Path:
    """Create and return the next ``base/version_<k>``; ``mkdir`` fails if another run took ``k`` first."""
    base.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for d in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", d.name))]
    k = max(taken, default=-1) + 1
    while True:
        run_dir = base / f"version_{k}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            k += 1
            continue
        if key:
            (run_dir / ".claim").write_text(key)
        return run_dir


def find_claimed(base: Path, key: str, timeout: float = 300.0) -> Path:
    """The ``version_<k>`` rank zero claimed for job ``key`` (other ranks of a SLURM/torchrun job wait for it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for claim in base.glob("version_*/.claim"):
            if claim.read_text() == key:
                return claim.parent
        time.sleep(0.5)
    raise TimeoutError(f"no run folder under {base} was claimed for job {key} within {timeout:.0f} s")


def trim_metrics(path: Path, step: int) -> None:
    """Drop the rows of ``metrics.csv`` logged at ``step`` or later (they are logged again after a resume)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    keep = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
    if len(keep) == len(rows):
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
    os.replace(tmp, path)


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self.resumed = os.path.isfile(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)

    def log_hparams(self, params: dict[str, Any]) -> None:
        if not self.resumed:  # a resumed run's record of what was trained stays as first written
            super().log_hparams(params)


class AppendingCSVLogger(CSVLogger):
    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}
