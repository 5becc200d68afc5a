"""Run folders, resume and checkpoint metadata: where a run lives and what its Trainer saves and logs.

A run lives in ``<default_root_dir>/<run_name>/version_<k>/`` with ``checkpoints/{best-*,last}.ckpt`` and the
logger's files. The low-level, kill-safe file handling (``last.ckpt``, the resumable train loader, claims,
metrics trimming) is in ``runio``; this module decides which folder, which checkpoint and which callbacks.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import netrc
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from . import registry
from .flags import parameters
from .plan import Plan, UserError, signatures
from .runio import (DISK_ERRORS, NEXT_LOG_STEP, AppendingCSVLogger, AtomicCheckpointIO, LastCheckpoint, StopSignals,
                    claim_run_dir, checkpoint_step, find_claimed, newest_state, remove_tmp, state_files)

# flags a resume may change: how long, where and on what it runs, and what it logs (not what it trains)
RESUME_MAY_CHANGE = {
    "max_epochs", "max_time", "max_steps", "min_epochs", "min_steps", "devices", "num_nodes", "accelerator",
    "strategy", "log_every_n_steps", "enable_progress_bar", "enable_model_summary", "profiler", "default_root_dir",
    "limit_test_batches", "num_sanity_val_steps", "num_workers", "pin_memory", "data_dir", "download",
}
RUN_DIR_ENV = "ATTENTION_LIGHTNING_RUN_DIR"  # rank zero's run folder, inherited by Lightning's DDP child processes
CKPT_KEY = "attention_lightning"


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


def find_resume(root: str, name: str, resume: str) -> Path:
    """The checkpoint ``--resume`` points at: a path, or ``last``: the newest state (by global step) of the
    newest run, whether its ``last.ckpt`` or a pre-emption checkpoint (``*.tmp`` files never count). A newest run
    without a readable state stops with one line naming it and the newest valid state: never another run silently."""
    if resume != "last":
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"--resume={resume}: no such checkpoint file; give a .ckpt path or --resume=last")
        return path
    runs = sorted(((int(m.group(1)), d) for d in (Path(root) / name).glob("version_*")
                   if (m := re.fullmatch(r"version_(\d+)", d.name)) and d.is_dir()), reverse=True)
    if not runs:
        raise UserError(
            f"--resume=last: nothing to resume, no {Path(root) / name}/version_*/checkpoints/last.ckpt; "
            f"start the run without --resume (or pass --default_root_dir/--run_name of the run to continue)")
    newest = newest_state(runs[0][1])
    broken = [f for f in state_files(runs[0][1]) if checkpoint_step(f) < 0]
    if newest is not None and not (broken and broken[0].stat().st_mtime > newest.stat().st_mtime):
        return newest
    older = newest or next((state for _, run in runs[1:] if (state := newest_state(run)) is not None), None)
    what = (f"{broken[0]} is not a readable checkpoint (truncated or corrupt)" if broken
            else f"{runs[0][1]} holds no saved state (it stopped before its first checkpoint)")
    fix = (f"to continue the newest valid state pass --resume={older}" if older
           else "start the run without --resume")
    raise UserError(f"--resume=last: the newest run's {what}; {fix}")


def run_dir_of(ckpt_path: Path) -> Path | None:
    """The run folder a checkpoint belongs to (``checkpoints/last.ckpt`` or a run's ``hpc_ckpt_<n>.ckpt``)."""
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent
    if ckpt_path.name.startswith("hpc_ckpt_") and re.fullmatch(r"version_\d+", ckpt_path.parent.name):
        return ckpt_path.parent
    return None


def check_wandb_credentials() -> None:
    """Fail fast instead of wandb's interactive login prompt (which blocks a batch job until its time limit)."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return
    from urllib.parse import urlparse
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        if os.path.isfile(path) and netrc.netrc(path).authenticators(host):
            return
    except (netrc.NetrcParseError, OSError):
        pass
    raise UserError(f"--logger=wandb: no W&B credentials (no WANDB_API_KEY, no {host} entry in ~/.netrc); "
                    "run `wandb login`, or set WANDB_MODE=offline to log locally and `wandb sync` later")


def make_logger(kind: str, run_dir: Path, run_name: str, project: str = "attention-lightning"):
    root, version = str(run_dir.parent.parent), run_dir.name
    number = int(version.split("_")[1])  # the folder is version_<number>; the progress bar's v_num shows it
    if kind == "none":
        return False
    if kind == "csv":
        return AppendingCSVLogger(root, name=run_name, version=number)
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger
        return TensorBoardLogger(root, name=run_name, version=number, default_hp_metric=False)
    from pytorch_lightning.loggers import WandbLogger
    run_dir.mkdir(parents=True, exist_ok=True)
    # the run id is tied to the run directory, so --resume continues the same wandb run
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]  # stable across processes
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_name}-{version}-{digest}")
    return WandbLogger(name=f"{run_name}/{version}", save_dir=str(run_dir), project=project, id=run_id, resume="allow")


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
                               "seed": p.cli["seed"]}}

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


def check_resume_flags(meta: dict[str, Any], p: Plan, ckpt_path: Path) -> None:
    """Refuse a resume whose model/data/trainer flags differ from the checkpoint's (but for RESUME_MAY_CHANGE)."""
    old = meta.get("flags")
    if not old:
        return  # a checkpoint from before flags were recorded
    sigs = signatures(registry.get_model(p.model_name).cls, registry.get_datamodule(p.data_name).cls)
    new = {"model": p.model_kwargs, "data": p.data_kwargs, "trainer": p.trainer_kwargs}

    def norm(v: Any) -> Any:
        return json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, tuple, dict)) else v

    diffs = []
    for target in ("model", "data", "trainer"):
        for k in sorted(set(old[target]) | set(new[target])):
            if k in RESUME_MAY_CHANGE or k not in sigs[target]:
                continue
            default = sigs[target][k].default
            before, after = old[target].get(k, default), new[target].get(k, default)
            if norm(before) != norm(after):
                diffs.append(f"--{k} was {before!r}, now {after!r}")
    if old.get("seed") is not None and old["seed"] != p.cli["seed"]:
        diffs.append(f"--seed was {old['seed']!r}, now {p.cli['seed']!r}")
    if diffs:
        raise UserError(f"--resume: {ckpt_path} was trained with other flags ({'; '.join(diffs)}); resume with the "
                        f"checkpoint's flags, or start a new run without --resume (e.g. with a new --run_name)")


@dataclass
class Resume:
    """The checkpoint ``--resume`` continues, checked against the plan; nothing is written when it is made."""
    ckpt: Path
    content: dict[str, Any]  # the checkpoint, loaded with weights_only
    run_dir: Path | None  # its run folder (None: a checkpoint outside one, continued in a new folder)
    first_row: int  # metrics.csv rows from this step on were logged after the checkpoint

    @property
    def meta(self) -> dict[str, Any]:
        return self.content[CKPT_KEY]


def resolve_resume(p: Plan, root: str, name: str) -> Resume | None:
    """The checkpoint of ``--resume`` (None without it), refused with one line when this command may not continue
    it: another model, other model/data/trainer flags, or a run folder it cannot write to. Reads only."""
    if p.cli.get("resume") is None:
        return None
    path = find_resume(root, name, str(p.cli["resume"]))
    content = checkpoint_meta(path)
    meta = content[CKPT_KEY]
    if meta["model"] != p.model_name:
        raise UserError(f"--resume: {path} was written by model {meta['model']!r}, not {p.model_name!r}; "
                        f"pass --model={meta['model']}")
    check_resume_flags(meta, p, path)
    run_dir = run_dir_of(path)
    for folder in ([run_dir, run_dir / "checkpoints"] if run_dir is not None else []):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise UserError(f"--resume: cannot write to the run folder {folder} (read-only or permission denied); "
                            f"make it writable, or copy the run to a writable folder and pass --resume=PATH there")
    logged = content.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    first = content.get(NEXT_LOG_STEP, logged.get("_batches_that_stepped", content.get("global_step", 0)))
    return Resume(path, content, run_dir, int(first))


def check_resume_weights(resume: Resume, p: Plan, model: pl.LightningModule) -> None:
    """The checkpoint's weights fit ``model`` (checked before anything is written, not when Lightning restores)."""
    state = resume.content.get("state_dict")
    if not isinstance(state, dict):
        raise UserError(f"--resume: {resume.ckpt} holds no model weights (no 'state_dict'); pass another checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError("--resume: " + load_failure(type(model), resume.ckpt, p.model_kwargs, e)) from None


def check_resume_world(resume: Resume, p: Plan, trainer: pl.Trainer) -> None:
    """A resume runs on as many processes as the checkpoint was trained on: each process's share of an epoch, the
    batches per epoch and the position inside the epoch depend on it, so another number would skip or repeat
    batches. ``--accelerator`` and, at the same number of processes, ``--strategy`` may change."""
    old = resume.meta.get("world_size")
    flags = (resume.meta.get("flags") or {}).get("trainer")
    if old is None and flags is not None:  # saved before the world size was recorded: the flags that set it
        sig = signatures(registry.get_model(p.model_name).cls, registry.get_datamodule(p.data_name).cls)["trainer"]
        names = ("devices", "num_nodes", "strategy")
        if all(flags.get(n, sig[n].default) == p.trainer_kwargs.get(n, sig[n].default) for n in names):
            return
        before = ", ".join(f"--{n}={flag_value(flags.get(n, sig[n].default))}" for n in names)
    elif old is None or old == trainer.world_size:
        return
    else:
        before = f"{old} process(es)"
    raise UserError(f"--resume: {resume.ckpt} was trained with {before}, this run would use {trainer.world_size} "
                    f"process(es) (--devices x --num_nodes); another number would skip or repeat batches: resume "
                    f"with the checkpoint's --devices/--num_nodes/--strategy, or start a new run without --resume")


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
    if p.cli["logger"] == "wandb":
        check_wandb_credentials()
    if p.cli["logger"] != "none":  # attention pictures for the logger (none: no callback, no cost)
        from .callbacks import AttentionLogger
        try:
            extra.append(AttentionLogger(p.cli.get("viz_every_n_steps", 500), p.cli.get("viz_images", 8)))
        except ValueError as e:
            raise UserError(str(e)) from None
    if kwargs.get("enable_progress_bar", True):
        from .progress import EpochLines, SteadyBar
        # a log file gets one line per epoch, not a bar's redraws; a terminal a bar redrawn at most 10 times a second
        extra.append(SteadyBar() if sys.stdout.isatty() else EpochLines())
    callbacks = callbacks_for(run_dir, extra, p.cli.get("checkpoint_every_n_minutes", 10.0),
                              p.cli.get("checkpoint_every_n_steps", 0), slurm_requeue=slurm, signals=signals)
    try:
        return pl.Trainer(
            logger=make_logger(p.cli["logger"], run_dir, run_dir.parent.name),
            callbacks=callbacks,
            plugins=plugins,
            **kwargs,
        )
    except (ValueError, TypeError, MisconfigurationException, RuntimeError, ImportError) as e:  # --devices=0, tpu
        raise UserError(f"invalid Trainer flags: {str(e).strip().splitlines()[0]}") from None


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


def resume_command(flags: Mapping[str, Any], ckpt: str) -> str:
    """The command line that continues this run from ``ckpt``."""
    args = [f"--{k}={flag_value(v)}" for k, v in flags.items() if k != "resume"]
    return " ".join(["python cli.py fit", *map(shlex.quote, args), shlex.quote(f"--resume={ckpt}")])
