"""Build and run an experiment from flat flags: the work behind ``cli.py fit`` and ``cli.py test``.

Order of precedence for every value: command-line flag > ``--config`` preset > constructor default.
Facts of the data source (classes, channels, image size) flow from the datamodule to the model.
A run lives in ``<default_root_dir>/<run_name>/version_<k>/`` with ``checkpoints/{best-*,last}.ckpt``
and the logger's files.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from . import registry
from .flags import FlagError, parameters, route
from .models.base import ConfigError, NonFiniteLossError
from .runio import AppendingCSVLogger, AtomicCheckpointIO

LOGGERS = ("csv", "tensorboard", "wandb", "none")
CLI_FLAGS = ("model", "data", "config", "seed", "ckpt", "resume", "logger", "run_name", "out", "num_images",
             "viz_every_n_steps", "viz_images", "compile")
TRAINER_MANAGED = ("logger", "callbacks", "enable_checkpointing", "plugins")  # built here, not by flag
DEFAULTS: Dict[str, Any] = {"model": "dham", "data": "cluttered_mnist", "seed": 0, "logger": "csv",
                            "max_epochs": 3, "default_root_dir": "runs"}
CKPT_KEY = "attention_lightning"


class UserError(ValueError):
    """Bad input from the command line; the CLI prints its message as one line."""


@contextlib.contextmanager
def user_errors():
    """Turn the errors a user can fix (bad data found while loading, a non-finite loss) into one-line ones."""
    from datamodules.base import DatasetError

    try:
        yield
    except (DatasetError, NonFiniteLossError, ConfigError) as e:
        raise UserError(str(e).strip().splitlines()[-1] if isinstance(e, DatasetError) else str(e)) from None


def load_config(path: str) -> Dict[str, Any]:
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


def merge_flags(flags: Mapping[str, Any]) -> Dict[str, Any]:
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
    model_kwargs: Dict[str, Any]
    data_kwargs: Dict[str, Any]
    trainer_kwargs: Dict[str, Any]
    cli: Dict[str, Any]


def signatures(model_cls: type, data_cls: type) -> Dict[str, Dict]:
    return {
        "model": parameters(model_cls),
        "data": parameters(data_cls),
        "trainer": parameters(pl.Trainer, skip=TRAINER_MANAGED),
    }


def plan(flags: Mapping[str, Any]) -> Plan:
    merged = merge_flags(flags)
    try:
        model_entry = registry.get_model(str(merged["model"]))
        data_entry = registry.get_datamodule(str(merged["data"]))
        routed, cli = route(merged, signatures(model_entry.cls, data_entry.cls), own=CLI_FLAGS)
    except (registry.RegistryError, FlagError) as e:
        raise UserError(str(e)) from None
    if cli["logger"] not in LOGGERS:
        raise UserError(f"--logger={cli['logger']!r} is not a logger; use one of {', '.join(LOGGERS)}")
    if not isinstance(cli["seed"], int) or isinstance(cli["seed"], bool):
        raise UserError(f"--seed={cli['seed']!r} must be an integer")
    if not isinstance(cli.get("compile", False), bool):
        raise UserError(f"--compile={cli['compile']!r} must be true or false")
    return Plan(model_entry.name, data_entry.name, routed["model"], routed["data"], routed["trainer"], cli)


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


def run_dir_for(root: str, name: str, version: Optional[int] = None) -> Path:
    """``root/name/version_k``: the given version, or the next free one."""
    base = Path(root) / name
    if version is None:
        taken = [int(m.group(1)) for d in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", d.name))]
        version = max(taken, default=-1) + 1
    return base / f"version_{version}"


def find_resume(root: str, name: str, resume: str) -> Path:
    """The checkpoint ``--resume`` points at: ``last`` (newest run's last.ckpt) or a path."""
    if resume != "last":
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"--resume={resume}: no such checkpoint file; give a .ckpt path or --resume=last")
        return path
    runs = sorted((Path(root) / name).glob("version_*/checkpoints/last.ckpt"),
                  key=lambda q: int(q.parent.parent.name.split("_")[1]))
    if not runs:
        raise UserError(
            f"--resume=last: nothing to resume, no {Path(root) / name}/version_*/checkpoints/last.ckpt; "
            f"start the run without --resume (or pass --default_root_dir/--run_name of the run to continue)"
        )
    return runs[-1]


def make_logger(kind: str, run_dir: Path, run_name: str, project: str = "attention-lightning"):
    root, version = str(run_dir.parent.parent), run_dir.name
    if kind == "none":
        return False
    if kind == "csv":
        return AppendingCSVLogger(root, name=run_name, version=version)
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger
        return TensorBoardLogger(root, name=run_name, version=version, default_hp_metric=False)
    from pytorch_lightning.loggers import WandbLogger
    run_dir.mkdir(parents=True, exist_ok=True)
    # the run id is tied to the run directory, so --resume continues the same wandb run
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]  # stable across processes
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_name}-{version}-{digest}")
    return WandbLogger(name=f"{run_name}/{version}", save_dir=str(run_dir), project=project, id=run_id, resume="allow")


def checkpoint_meta(path: Path) -> Dict[str, Any]:
    """Our metadata from a checkpoint, loaded without executing pickled code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or CKPT_KEY not in ckpt:
        raise UserError(f"{path} is not an attention-lightning checkpoint (no {CKPT_KEY!r} entry)")
    return ckpt


def callbacks_for(run_dir: Path, extra: List[Callback]) -> List[Callback]:
    ckpt = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"), filename="best-epoch{epoch}-step{step}", monitor="val/acc",
        mode="max", save_last=True, save_top_k=1, auto_insert_metric_name=False,
    )
    return [ckpt, *extra]


class RunInfo(Callback):
    """Stores which model and datamodule (by registry name, with the datamodule's flags) made a checkpoint."""

    def __init__(self, model_name: str, data_name: str, data_kwargs: Dict[str, Any]) -> None:
        self.meta = {"model": model_name, "data": data_name, "data_kwargs": dict(data_kwargs)}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[CKPT_KEY] = dict(self.meta)


def make_trainer(p: Plan, run_dir: Path, extra_callbacks: Optional[List[Callback]] = None) -> pl.Trainer:
    kwargs = dict(p.trainer_kwargs)
    kwargs.setdefault("default_root_dir", str(run_dir))
    info = RunInfo(p.model_name, p.data_name, p.data_kwargs)
    extra = [info, *(extra_callbacks or [])]
    if p.cli["logger"] != "none":  # attention pictures for the logger (none: no callback, no cost)
        from .callbacks import AttentionLogger
        try:
            extra.append(AttentionLogger(p.cli.get("viz_every_n_steps", 500), p.cli.get("viz_images", 8)))
        except ValueError as e:
            raise UserError(str(e)) from None
    try:
        return pl.Trainer(
            logger=make_logger(p.cli["logger"], run_dir, run_dir.parent.name),
            callbacks=callbacks_for(run_dir, extra),
            plugins=[AtomicCheckpointIO()],
            **kwargs,
        )
    except (ValueError, TypeError) as e:  # e.g. --devices=3 on a 1-GPU machine, bad --strategy
        raise UserError(f"invalid Trainer flags: {str(e).splitlines()[0]}") from None


def fit_stages(flags: Mapping[str, Any], p: Plan, stages: List[Any],
               extra_callbacks: Optional[List[Callback]] = None) -> Dict[str, Any]:
    """Run a model's training stages in sequence (e.g. PHAM's ``--phase=all``).

    ``stages`` is the model class's ``stages(model_kwargs)``: ``(label, model flag updates)`` pairs. Each
    stage is one ``fit`` in its own run dir ``<run_name>-<label>``, started (``--init_from``) from the
    previous stage's best checkpoint, or its last one when there is no best (e.g. ``fast_dev_run``).
    """
    name = p.cli.get("run_name") or f"{p.model_name}-{p.data_name}"
    done: Dict[str, Any] = {}
    summary: Dict[str, Any] = {}
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


def fit(flags: Mapping[str, Any], extra_callbacks: Optional[List[Callback]] = None,
        save_last: bool = False) -> Dict[str, Any]:
    """Train, then test the best checkpoint; returns a summary dict (printed by the CLI).

    A model class whose ``stages(model_kwargs)`` returns stages is trained by ``fit_stages``;
    ``save_last`` writes ``last.ckpt`` even when the Trainer wrote none (``fast_dev_run``).
    """
    p = plan(flags)
    stage_list = registry.get_model(p.model_name).cls.stages(dict(p.model_kwargs))
    if len(stage_list) > 1:
        return fit_stages(flags, p, stage_list, extra_callbacks)
    pl.seed_everything(p.cli["seed"], workers=True, verbose=False)
    root = p.trainer_kwargs.pop("default_root_dir", DEFAULTS["default_root_dir"])
    name = p.cli.get("run_name") or f"{p.model_name}-{p.data_name}"
    ckpt_path = None
    if p.cli.get("resume"):
        ckpt_path = find_resume(root, name, str(p.cli["resume"]))
        meta = checkpoint_meta(ckpt_path)[CKPT_KEY]
        if meta["model"] != p.model_name:
            raise UserError(f"--resume: {ckpt_path} was written by model {meta['model']!r}, not {p.model_name!r}; "
                            f"pass --model={meta['model']}")
        run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else run_dir_for(root, name)
    else:
        run_dir = run_dir_for(root, name)
    dm = build_datamodule(p)
    model = build_model(p, dm)
    if p.cli.get("compile"):
        model.compile_step()
    trainer = make_trainer(p, run_dir, extra_callbacks)
    with user_errors():
        trainer.fit(model, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    summary: Dict[str, Any] = {"run_dir": str(run_dir), "digits": getattr(dm, "digit_source", None)}
    ckpt_cb = trainer.checkpoint_callback
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    summary["best_checkpoint"] = best or None
    summary["last_checkpoint"] = str(run_dir / "checkpoints" / "last.ckpt")
    if save_last and not trainer.interrupted and not Path(summary["last_checkpoint"]).is_file():
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


def test(flags: Mapping[str, Any]) -> Dict[str, Any]:
    """Evaluate ``--ckpt`` on its datamodule's test split (datamodule flags may be overridden)."""
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
    p = plan({**base, **flags})
    pl.seed_everything(p.cli["seed"], workers=True, verbose=False)
    dm = build_datamodule(p)
    cls = registry.get_model(p.model_name).cls
    model = cls.load_from_checkpoint(str(ckpt), map_location="cpu", weights_only=True)
    kwargs = {k: v for k, v in p.trainer_kwargs.items() if k not in ("max_epochs", "default_root_dir")}
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, **kwargs)
    with user_errors():
        results = trainer.test(model, datamodule=dm, verbose=False, weights_only=True)
    return {"test": results[0] if results else {}, "checkpoint": str(ckpt), "digits": getattr(dm, "digit_source", None)}


def visualize(flags: Mapping[str, Any]) -> Dict[str, Any]:
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
    p = plan({"model": meta["model"], "data": meta["data"], **meta["data_kwargs"], "logger": "none", **flags})
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
