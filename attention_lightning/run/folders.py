"""Run folders: ``<default_root_dir>/<run_name>/version_<k>/``, claimed with an atomic ``mkdir`` so two runs
never share one, locked while a process trains in it, removed when a new run fails before training, and cleaned of
killed writes (``*.tmp``) when a resumed run starts; a failed write becomes one line."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import time
from pathlib import Path

from pytorch_lightning.callbacks import Callback

from .checkpoints import checkpoint_step
from .loggers import trim_metrics
from .plan import UserError

RUN_DIR_ENV = "ATTENTION_LIGHTNING_RUN_DIR"  # rank zero's run folder, inherited by Lightning's DDP child processes
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


def claim_new_run_dir(root: str, name: str) -> Path:
    """A new ``root/name/version_k`` no other run has, taken atomically. Under DDP every rank gets rank zero's
    folder: Lightning's child processes inherit it, other ranks of a SLURM/torchrun job wait for its claim."""
    base = Path(root) / name
    if int(os.environ.get("LOCAL_RANK", "0")) > 0 and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID") or ""
    key = f"{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}" if job else ""
    if key and int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) > 0:
        return find_claimed(base, key)
    run_dir = claim_run_dir(base, key)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def run_dir_of(ckpt_path: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``checkpoints/last.ckpt`` or a run's ``hpc_ckpt_<n>.ckpt``)."""
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent
    if ckpt_path.name.startswith("hpc_ckpt_") and re.fullmatch(r"version_\d+", ckpt_path.parent.name):
        return ckpt_path.parent
    return None


def claim_run_folder(root: str, name: str) -> Path:
    """``claim_new_run_dir``, with a folder that cannot be made as one line."""
    try:
        return claim_new_run_dir(root, name)
    except OSError as e:
        reason = DISK_ERRORS.get(e.errno, e.strerror)
        raise UserError(f"cannot create the run folder under {Path(root) / name}: {reason}; "
                        f"pass a writable --default_root_dir") from None


@contextlib.contextmanager
def run_lock(run_dir: Path, take: bool = True):
    """Hold an exclusive lock on the run folder (``flock`` on the folder itself: nothing is written, and the lock
    goes with the process, also when it is killed) while this process trains in it; a second process that would
    train in the same folder (two resumes of one run, a resume of a run still training) stops with one line."""
    if not take:
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise UserError(f"{run_dir} is in use by another process training in it (a run still going, or a "
                            f"second --resume of it); wait for it to end, or start a new run without --resume") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_failed_start(run_dir: Path) -> None:
    """A new run that failed before training leaves nothing: its version folder (and an emptied run name folder)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # only when empty


@contextlib.contextmanager
def run_faults(run_dir: Path):
    """A write that fails (full disk, read-only folder) becomes one line; no ``*.tmp`` is left behind."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        remove_tmp(run_dir)
        last = run_dir / "checkpoints" / "last.ckpt"
        then = (f"then continue it with --resume={last}" if last.is_file() and checkpoint_step(last) >= 0
                else "then start the run again (it saved no last.ckpt to continue from)")
        raise UserError(f"cannot write to {run_dir}: {DISK_ERRORS[e.errno]}; free space or pass a writable "
                        f"--default_root_dir, {then}") from None
    except BaseException:
        remove_tmp(run_dir)
        raise


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
