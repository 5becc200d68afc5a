"""Flat flags to a ``Plan``: what a command builds, with which arguments.

Order of precedence for every value: command-line flag > ``--config`` preset > constructor default. Flags
are routed by name to the model, the datamodule or ``pl.Trainer``; the CLI keeps its own (``COMMAND_FLAGS``).
Facts of the data source (classes, channels, image size) flow from the datamodule to the model.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml

from .. import registry
from ..models.base import ConfigError, NonFiniteLossError
from ..signature import coerce, parameters
from .flags import FlagError, route

LOGGERS = ("csv", "tensorboard", "wandb", "none")
COMMAND_FLAGS = {  # the CLI's own flags, per command (the rest are routed to model, data and Trainer)
    "fit": ("model", "data", "config", "seed", "resume", "logger", "run_name", "viz_every_n_steps", "viz_images",
            "checkpoint_every_n_minutes", "checkpoint_every_n_steps", "compile"),
    "test": ("model", "data", "config", "seed", "ckpt", "pretrained", "logger"),
    "visualize": ("model", "data", "config", "seed", "ckpt", "pretrained", "out", "num_images", "split", "logger"),
    "export": ("model", "data", "config", "seed", "ckpt", "out", "overwrite", "num_images", "split", "logger"),
}
CLI_FLAGS = tuple(dict.fromkeys(f for flags in COMMAND_FLAGS.values() for f in flags))
HINTS = {("fit", "ckpt"): "; to continue a run use --resume=last or --resume=PATH",
         ("test", "resume"): "; test takes --ckpt=PATH", ("visualize", "resume"): "; visualize takes --ckpt=PATH",
         ("export", "resume"): "; export takes --ckpt=PATH"}
TRAINER_MANAGED = ("logger", "callbacks", "enable_checkpointing", "plugins")  # built by runs.make_trainer, not by flag
DEFAULTS: dict[str, Any] = {"model": "dham", "data": "cluttered_mnist", "seed": 0, "logger": "csv",
                            "max_epochs": 3, "default_root_dir": "runs"}


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


def check_run_name(value: Any) -> str:
    """A run name is a folder name under ``--default_root_dir``, never a path out of it."""
    name = str(value)
    if isinstance(value, bool) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name or \
            "\0" in name or len(name.encode()) > 255:
        raise UserError(f"--run_name={value!r} is not a folder name (a name, not a path: no '/', not '.' or '..', "
                        f"at most 255 bytes); to write elsewhere pass --default_root_dir=DIR")
    return name


def plan(flags: Mapping[str, Any], command: str = "fit") -> Plan:
    for name, value in flags.items():  # fire reads --x= as ''
        if isinstance(value, str) and not value.strip():
            raise UserError(f"--{name}={value!r} is empty; give it a value or leave the flag out")
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
    if "resume" in cli and (not isinstance(cli["resume"], (str, int)) or isinstance(cli["resume"], bool)):
        raise UserError(f"--resume={cli['resume']!r} needs a value: --resume=last or --resume=PATH of a .ckpt")
    if cli.get("run_name") is not None:
        cli["run_name"] = check_run_name(cli["run_name"])
    if cli["logger"] not in LOGGERS:
        raise UserError(f"--logger={cli['logger']!r} is not a logger; use one of {', '.join(LOGGERS)}")
    if not isinstance(cli["seed"], int) or isinstance(cli["seed"], bool):
        raise UserError(f"--seed={cli['seed']!r} must be an integer")
    if "compile" in cli:  # fire passes --compile=true as the string 'true'
        cli["compile"] = coerce(cli["compile"], bool)
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

