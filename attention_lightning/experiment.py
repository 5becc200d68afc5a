"""Build and run an experiment from flat flags: the work behind ``cli.py fit`` and ``cli.py test``.

Order of precedence for every value: command-line flag > ``--config`` preset > constructor default.
Facts of the data source (classes, channels, image size) flow from the datamodule to the model.
A run lives in ``<default_root_dir>/<run_name>/version_<k>/`` with ``checkpoints/{best-*,last}.ckpt``
and the logger's files.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import netrc
import os
import re
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
import yaml
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from . import registry
from .flags import FlagError, parameters, route
from .models.base import ConfigError, NonFiniteLossError
from .runio import (DISK_ERRORS, NEXT_LOG_STEP, StopTraining, AppendingCSVLogger, AtomicCheckpointIO, LastCheckpoint, TrainStream,
                    claim_run_dir, find_claimed, newest_state, remove_tmp, trim_metrics)

LOGGERS = ("csv", "tensorboard", "wandb", "none")
COMMAND_FLAGS = {  # the CLI's own flags, per command (the rest are routed to model, data and Trainer)
    "fit": ("model", "data", "config", "seed", "resume", "logger", "run_name", "viz_every_n_steps", "viz_images",
            "checkpoint_every_n_minutes", "checkpoint_every_n_steps", "compile"),
    "test": ("model", "data", "config", "seed", "ckpt", "logger"),
    "visualize": ("model", "data", "config", "seed", "ckpt", "out", "num_images", "split", "logger"),
}
CLI_FLAGS = tuple(dict.fromkeys(f for flags in COMMAND_FLAGS.values() for f in flags))
HINTS = {("fit", "ckpt"): "; to continue a run use --resume=last or --resume=PATH",
         ("test", "resume"): "; test takes --ckpt=PATH", ("visualize", "resume"): "; visualize takes --ckpt=PATH"}
# flags a resume may change: how long, where and on what it runs, and what it logs (not what it trains)
RESUME_MAY_CHANGE = {
    "max_epochs", "max_time", "max_steps", "min_epochs", "min_steps", "devices", "num_nodes", "accelerator",
    "strategy", "log_every_n_steps", "enable_progress_bar", "enable_model_summary", "profiler", "default_root_dir",
    "limit_test_batches", "num_sanity_val_steps", "num_workers", "pin_memory", "data_dir", "download",
}
RUN_DIR_ENV = "ATTENTION_LIGHTNING_RUN_DIR"  # rank zero's run folder, inherited by Lightning's DDP child processes
TRAINER_MANAGED = ("logger", "callbacks", "enable_checkpointing", "plugins")  # built here, not by flag
DEFAULTS: dict[str, Any] = {"model": "dham", "data": "cluttered_mnist", "seed": 0, "logger": "csv",
                            "max_epochs": 3, "default_root_dir": "runs"}
CKPT_KEY = "attention_lightning"


class _DropThirdPartyTips(logging.Filter):
    """Drops Lightning's advertisement for another product from the run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith("\U0001f4a1 Tip: For seamless cloud logging")


def quiet_third_party() -> None:
    """Filter the exact third-party lines that say nothing about the run (issue 13): a product tip and a
    deprecation inside pytorch_lightning's own code."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropThirdPartyTips) for f in log.filters):
            log.addFilter(_DropThirdPartyTips())


class UserError(ValueError):
    """Bad input from the command line; the CLI prints its message as one line."""


class Interrupted(UserError):
    """Training stopped on request (Ctrl-C, SLURM pre-emption) after saving; the message says how to continue."""


@contextlib.contextmanager
def user_errors():
    """Turn the errors a user can fix (bad data found while loading, a non-finite loss) into one-line ones."""
    from datamodules.base import DatasetError

    try:
        yield
    except (DatasetError, NonFiniteLossError, ConfigError) as e:
        raise UserError(str(e).strip().splitlines()[-1] if isinstance(e, DatasetError) else str(e)) from None


def load_config(path: str) -> dict[str, Any]:
    """A preset: a flat YAML mapping of flag names to values."""
    p = Path(path)
    if not p.is_file():
        presets = sorted(str(q) for q in Path("configs").glob("*.yaml")) if Path("configs").is_dir() else []
        raise UserError(f"--config={path}: no such file" + (f"; presets: {', '.join(presets)}" if presets else ""))
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"--config={path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config={path} must be a mapping of flag names to values, got {type(data).__name__}")
    return data


def merge_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults < preset < flags."""
    merged = dict(DEFAULTS)
    if flags.get("config"):
        merged.update(load_config(str(flags["config"])))
    merged.update({k: v for k, v in flags.items()})
    return merged


@dataclass
class Plan:
    """Everything a run needs, resolved from flags."""
    model_name: str
    data_name: str
    model_kwargs: dict[str, Any]
    data_kwargs: dict[str, Any]
    trainer_kwargs: dict[str, Any]
    cli: dict[str, Any]


def signatures(model_cls: type, data_cls: type) -> dict[str, dict]:
    return {
        "model": parameters(model_cls),
        "data": parameters(data_cls),
        "trainer": parameters(pl.Trainer, skip=TRAINER_MANAGED),
    }


def plan(flags: Mapping[str, Any], command: str = "fit") -> Plan:
    merged = merge_flags(flags)
    try:
        model_entry = registry.get_model(str(merged["model"]))
        data_entry = registry.get_datamodule(str(merged["data"]))
        routed, cli = route(merged, signatures(model_entry.cls, data_entry.cls), own=CLI_FLAGS)
    except (registry.RegistryError, FlagError) as e:
        raise UserError(str(e)) from None
    for name in cli:
        if name not in COMMAND_FLAGS[command]:
            owners = [c for c, names in COMMAND_FLAGS.items() if name in names]
            raise UserError(f"--{name} is a flag of `{'`/`'.join(owners)}`, not of `{command}`"
                            + HINTS.get((command, name), f"; see `python cli.py {command} --help`"))
    for name in ("checkpoint_every_n_minutes", "checkpoint_every_n_steps"):
        value = cli.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                name.endswith("steps") and not isinstance(value, int)):
            raise UserError(f"--{name}={value!r} must be a number >= 0 (0 turns it off)")
    if cli["logger"] not in LOGGERS:
        raise UserError(f"--logger={cli['logger']!r} is not a logger; use one of {', '.join(LOGGERS)}")
    if not isinstance(cli["seed"], int) or isinstance(cli["seed"], bool):
        raise UserError(f"--seed={cli['seed']!r} must be an integer")
    if not isinstance(cli.get("compile", False), bool):
        raise UserError(f"--compile={cli['compile']!r} must be true or false")
    return Plan(model_entry.name, data_entry.name, routed["model"], routed["data"], routed["trainer"], cli)


def help_text(command: str, flags: Mapping[str, Any]) -> str:
    """``--help`` for ``command``: its own flags, then the model's, the datamodule's and the Trainer's."""
    from .help import render

    merged = merge_flags(flags)
    try:
        model_cls = registry.get_model(str(merged["model"])).cls
        data_cls = registry.get_datamodule(str(merged["data"])).cls
    except registry.RegistryError as e:
        raise UserError(str(e)) from None
    sigs = signatures(model_cls, data_cls)
    groups = {f"model ({merged['model']})": (model_cls, sigs["model"]),
              f"data ({merged['data']})": (data_cls, sigs["data"]), "trainer": (pl.Trainer, sigs["trainer"])}
    preset = str(flags["config"]) if flags.get("config") else None
    return render(command, list(COMMAND_FLAGS[command]), groups, preset, load_config(preset) if preset else None)


def build_datamodule(p: Plan) -> pl.LightningDataModule:
    cls = registry.get_datamodule(p.data_name).cls
    try:
        return cls(**p.data_kwargs)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None


def build_model(p: Plan, dm: pl.LightningDataModule) -> pl.LightningModule:
    """The model, given what the datamodule says about its data (explicit flags win)."""
    try:
        return registry.build_model(p.model_name, registry.data_facts(dm).model_facts(), p.model_kwargs)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None


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
    newest run, whether its ``last.ckpt`` or a pre-emption checkpoint (``*.tmp`` files never count)."""
    if resume != "last":
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"--resume={resume}: no such checkpoint file; give a .ckpt path or --resume=last")
        return path
    runs = sorted(((int(m.group(1)), d) for d in (Path(root) / name).glob("version_*")
                   if (m := re.fullmatch(r"version_(\d+)", d.name))), reverse=True)
    for _, run in runs:
        newest = newest_state(run)
        if newest is not None:
            return newest
    raise UserError(
        f"--resume=last: nothing to resume, no {Path(root) / name}/version_*/checkpoints/last.ckpt; "
        f"start the run without --resume (or pass --default_root_dir/--run_name of the run to continue)"
    )


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
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt:
        raise UserError(f"{path} is not an attention-lightning checkpoint (no {CKPT_KEY!r} entry)")
    return ckpt


def callbacks_for(run_dir: Path, extra: list[Callback], every_n_minutes: float = 10.0, every_n_steps: int = 0,
                  slurm_requeue: bool = False) -> list[Callback]:
    """``best-*.ckpt`` (top ``val/acc``) and ``last.ckpt`` (the newest state, see ``LastCheckpoint``)."""
    best = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"), filename="best-epoch{epoch}-step{step}", monitor="val/acc",
        mode="max", save_last=False, save_top_k=1, auto_insert_metric_name=False,
    )
    last = LastCheckpoint(str(run_dir / "checkpoints"), every_n_minutes, every_n_steps, slurm_requeue)
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
        checkpoint[CKPT_KEY] = dict(self.meta)


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


def make_trainer(p: Plan, run_dir: Path, extra_callbacks: list[Callback] | None = None) -> pl.Trainer:
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
    if kwargs.get("enable_progress_bar", True) and not sys.stdout.isatty():
        from .progress import EpochLines
        extra.append(EpochLines())  # a log file gets one line per epoch, not a bar's redraws
    callbacks = callbacks_for(run_dir, extra, p.cli.get("checkpoint_every_n_minutes", 10.0),
                              p.cli.get("checkpoint_every_n_steps", 0), slurm_requeue=slurm)
    try:
        return pl.Trainer(
            logger=make_logger(p.cli["logger"], run_dir, run_dir.parent.name),
            callbacks=callbacks,
            plugins=plugins,
            **kwargs,
        )
    except (ValueError, TypeError, MisconfigurationException, RuntimeError) as e:  # --devices=0, no GPU, ...
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
        raise UserError(f"cannot write to {run_dir}: {DISK_ERRORS[e.errno]}; free space or pass a writable "
                        f"--default_root_dir (a run that saved a checkpoint continues with --resume=last)") from None
    except BaseException:
        remove_tmp(run_dir)
        raise


def resume_command(flags: Mapping[str, Any], ckpt: str) -> str:
    """The command line that continues this run from ``ckpt``."""
    args = [f"--{k}={json.dumps(v) if isinstance(v, (list, tuple, dict)) else v}"
            for k, v in flags.items() if k != "resume"]
    return " ".join(["python cli.py fit", *map(shlex.quote, args), shlex.quote(f"--resume={ckpt}")])


def fit_stages(flags: Mapping[str, Any], p: Plan, stages: list[Any],
               extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Run a model's training stages in sequence (e.g. PHAM's ``--phase=all``).

    ``stages`` is the model class's ``stages(model_kwargs)``: ``(label, model flag updates)`` pairs. Each
    stage is one ``fit`` in its own run dir ``<run_name>-<label>``, started (``--init_from``) from the
    previous stage's best checkpoint, or its last one when there is no best (e.g. ``fast_dev_run``).
    """
    name = p.cli.get("run_name") or f"{p.model_name}-{p.data_name}"
    done: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    init = None
    for label, update in stages:
        stage_flags = {**flags, **{f"model.{k}": v for k, v in update.items()}, "run_name": f"{name}-{label}"}
        if init:
            stage_flags["model.init_from"] = init
        summary = fit(stage_flags, extra_callbacks, save_last=True)
        done[label] = summary
        if summary.get("interrupted"):
            break
        init = summary.get("best_checkpoint") or summary["last_checkpoint"]
    return {**summary, "stages": done}


def fit(flags: Mapping[str, Any], extra_callbacks: list[Callback] | None = None,
        save_last: bool = False) -> dict[str, Any]:
    """Train, then test the best checkpoint; returns a summary dict (printed by the CLI).

    A model class whose ``stages(model_kwargs)`` returns stages is trained by ``fit_stages``;
    ``save_last`` writes ``last.ckpt`` even when the Trainer wrote none (``fast_dev_run``).
    """
    quiet_third_party()
    p = plan(flags)
    stage_list = registry.get_model(p.model_name).cls.stages(dict(p.model_kwargs))
    if len(stage_list) > 1:
        return fit_stages(flags, p, stage_list, extra_callbacks)
    pl.seed_everything(p.cli["seed"], workers=True, verbose=False)
    root = p.trainer_kwargs.pop("default_root_dir", DEFAULTS["default_root_dir"])
    name = p.cli.get("run_name") or f"{p.model_name}-{p.data_name}"
    ckpt_path = None
    rank_zero = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("RANK", "0")) == 0
    try:
        if p.cli.get("resume"):
            ckpt_path = find_resume(root, name, str(p.cli["resume"]))
            ckpt = checkpoint_meta(ckpt_path)
            meta = ckpt[CKPT_KEY]
            if meta["model"] != p.model_name:
                raise UserError(f"--resume: {ckpt_path} was written by model {meta['model']!r}, not "
                                f"{p.model_name!r}; pass --model={meta['model']}")
            check_resume_flags(meta, p, ckpt_path)
            run_dir = run_dir_of(ckpt_path) or claim_new_run_dir(root, name)
            if rank_zero:
                remove_tmp(run_dir)  # what a killed run was writing
                logged = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
                first = ckpt.get(NEXT_LOG_STEP, logged.get("_batches_that_stepped", ckpt.get("global_step", 0)))
                trim_metrics(run_dir / "metrics.csv", int(first))
        else:
            run_dir = claim_new_run_dir(root, name)
    except OSError as e:
        reason = DISK_ERRORS.get(e.errno, e.strerror)
        raise UserError(f"cannot create the run folder under {Path(root) / name}: {reason}; "
                        f"pass a writable --default_root_dir") from None
    try:
        dm = build_datamodule(p)
        model = build_model(p, dm)
        if p.cli.get("compile"):
            model.compile_step()
        stream = TrainStream(dm, p.cli["seed"])
        trainer = make_trainer(p, run_dir, [stream, *(extra_callbacks or [])])
    except BaseException:
        if not ckpt_path and rank_zero and {q.name for q in run_dir.iterdir()} <= {".claim"}:
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that could not start leaves no empty folder
        raise
    last_cb = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
    with user_errors(), run_faults(run_dir), warnings.catch_warnings():
        # TrainStream keeps the train loader's position itself, in its callback state
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
        try:
            trainer.fit(model, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
        except StopTraining:
            pass  # last_cb.stop_reason says why
    summary: dict[str, Any] = {"run_dir": str(run_dir), "digits": getattr(dm, "digit_source", None)}
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    summary["best_checkpoint"] = best or None
    summary["last_checkpoint"] = str(run_dir / "checkpoints" / "last.ckpt")
    if last_cb.stop_reason:
        step, epoch = trainer.global_step, trainer.current_epoch
        how = (f"{last_cb.requeued} (it continues with --resume=last)" if last_cb.requeued
               else f"continue with: {resume_command(flags, summary['last_checkpoint'])}")
        raise Interrupted(f"stopped by {last_cb.stop_reason} in epoch {epoch} at step {step}: saved "
                          f"{summary['last_checkpoint']}; {how}")
    if save_last and not trainer.interrupted and not Path(summary["last_checkpoint"]).is_file():
        with run_faults(run_dir):
            trainer.save_checkpoint(summary["last_checkpoint"])  # the next stage starts from it
    if trainer.interrupted:
        summary["interrupted"] = True
        return summary
    if not trainer.fast_dev_run and trainer.limit_test_batches != 0:
        with user_errors():
            results = trainer.test(model, datamodule=dm, ckpt_path="best" if best else None, verbose=False,
                                   weights_only=True)
        summary["test"] = results[0] if results else {}
    summary["global_step"] = trainer.global_step
    return summary


def test(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate ``--ckpt`` on its datamodule's test split (datamodule flags may be overridden)."""
    quiet_third_party()
    flags = dict(flags)
    ckpt = flags.pop("ckpt", None)
    if not ckpt:
        raise UserError("test needs --ckpt=PATH (e.g. runs/dham-cluttered_mnist/version_0/checkpoints/last.ckpt)")
    if not Path(str(ckpt)).is_file():
        raise UserError(f"--ckpt={ckpt}: no such file")
    meta = checkpoint_meta(Path(str(ckpt)))[CKPT_KEY]
    if flags.get("model") and flags["model"] != meta["model"]:
        raise UserError(f"--ckpt={ckpt} was written by model {meta['model']!r}, not {flags['model']!r}; "
                        f"drop --model or pass --model={meta['model']}")
    base = {"model": meta["model"], "data": meta["data"], **meta["data_kwargs"], "logger": "none"}
    p = plan({**base, **flags}, command="test")
    pl.seed_everything(p.cli["seed"], workers=True, verbose=False)
    dm = build_datamodule(p)
    cls = registry.get_model(p.model_name).cls
    model = cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
    kwargs = {k: v for k, v in p.trainer_kwargs.items() if k not in ("max_epochs", "default_root_dir")}
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, **kwargs)
    with user_errors():
        results = trainer.test(model, datamodule=dm, verbose=False, weights_only=True)
    return {"test": results[0] if results else {}, "checkpoint": str(ckpt), "digits": getattr(dm, "digit_source", None)}


def visualize(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Draw ``--num_images`` images of the ``--split`` (val|test) of ``--ckpt``'s datamodule with its attention
    into ``--out``: a picture (.png, .jpg, .pdf, .svg) of every step, or a .gif with one frame per step."""
    from . import viz
    from .callbacks import draw_attention, first_items

    flags = dict(flags)
    ckpt, out = flags.pop("ckpt", None), flags.pop("out", None)
    num_images, split = flags.pop("num_images", 8), str(flags.pop("split", "val"))
    if not ckpt:
        raise UserError("visualize needs --ckpt=PATH (e.g. runs/dham-cluttered_mnist/version_0/checkpoints/last.ckpt)")
    if not out:
        raise UserError("visualize needs --out=FILE.png (or FILE.gif for one frame per step)")
    if not Path(str(ckpt)).is_file():
        raise UserError(f"--ckpt={ckpt}: no such file")
    if split not in ("val", "test"):
        raise UserError(f"--split={split!r} is not drawable; use --split=val or --split=test")
    if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1:
        raise UserError(f"--num_images={num_images!r} must be an integer >= 1")
    try:
        viz.check_output(out)
    except ValueError as e:
        raise UserError(str(e)) from None
    meta = checkpoint_meta(Path(str(ckpt)))[CKPT_KEY]
    if flags.get("model") and flags["model"] != meta["model"]:
        raise UserError(f"--ckpt={ckpt} was written by model {meta['model']!r}, not {flags['model']!r}; "
                        f"drop --model or pass --model={meta['model']}")
    p = plan({"model": meta["model"], "data": meta["data"], **meta["data_kwargs"], "logger": "none", **flags},
             command="visualize")
    pl.seed_everything(p.cli["seed"], workers=True, verbose=False)
    dm = build_datamodule(p)
    model = registry.get_model(p.model_name).cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
    with user_errors():
        dm.setup("validate" if split == "val" else "test")
        batch = first_items(dm.val_dataloader() if split == "val" else dm.test_dataloader(), num_images)
    att = draw_attention(model, batch)
    path = viz.save_attention(att, out, num_images, getattr(dm, "class_names", None))
    acc = att.step_accuracy()
    return {"out": str(path), "images": int(att.images.shape[0]), "steps": att.steps, "model": p.model_name,
            "accuracy": None if acc is None else float(acc[-1]), "checkpoint": str(ckpt)}
