"""Flat flags to a ``Plan``: what a command builds, with which arguments.

Order of precedence for every value: command-line flag > ``--config`` preset > constructor default. Flags
are routed by name to the model, the datamodule or ``pl.Trainer``; the CLI keeps its own (declared in
``flags.COMMANDS``). Facts of the data source (classes, channels, image size) flow from the datamodule to the
model. The plan keeps what it worked out: the signatures flags were routed by and every own flag resolved.
"""
from __future__ import annotations

import contextlib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml

from .. import registry
from ..models.base import ConfigError, NonFiniteLossError
from ..signature import parameters
from .flags import (COMMANDS, LOGGER_KINDS, RECORDED, TRAINER_BUILT, TRAINER_DEFAULTS, Flag, FlagError,
                    declared, own_flags, route)

LOGGERS = typing.get_args(LOGGER_KINDS)
COMMAND_FLAGS = {command: tuple(f.name for f in flags) for command, flags in COMMANDS.items()}
CLI_FLAGS = tuple(dict.fromkeys(f for flags in COMMAND_FLAGS.values() for f in flags))
TRAINER_MANAGED = TRAINER_BUILT  # built by trainer.make_trainer, not by flag
DEFAULTS: dict[str, Any] = {**{f.name: f.default for f in RECORDED}, **TRAINER_DEFAULTS}


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
    cli: dict[str, Any]  # the command's own flags given (and model, data, seed, logger), checked
    resolved: dict[str, Any] = field(default_factory=dict)  # every own flag of the command, defaults filled in
    signatures: dict[str, dict] = field(default_factory=dict)  # model/data/trainer parameters flags were routed by


def signatures(model_cls: type, data_cls: type) -> dict[str, dict]:
    return {
        "model": parameters(model_cls),
        "data": parameters(data_cls),
        "trainer": parameters(pl.Trainer, skip=TRAINER_MANAGED),
    }


def plan(flags: Mapping[str, Any], command: str = "fit") -> Plan:
    for name, value in flags.items():  # fire reads --x= as ''
        if isinstance(value, str) and not value.strip():
            raise UserError(f"--{name}={value!r} is empty; give it a value or leave the flag out")
    merged = merge_flags(flags)
    try:
        model_entry = registry.get_model(str(merged["model"]))
        data_entry = registry.get_datamodule(str(merged["data"]))
        sigs = signatures(model_entry.cls, data_entry.cls)
        routed, given = route(merged, sigs, own=CLI_FLAGS)
        resolved = own_flags(command, given)
    except (registry.RegistryError, FlagError) as e:
        raise UserError(str(e)) from None
    cli = {name: resolved[name] for name in given}
    return Plan(model_entry.name, data_entry.name, routed["model"], routed["data"], routed["trainer"], cli, resolved,
                sigs)


def own_value(command: str, name: str, flags: dict[str, Any]) -> Any:
    """``--name`` popped from ``flags`` and checked against its declaration for ``command`` (its default when not
    given)."""
    f: Flag = declared(command, name)
    if name not in flags:
        return f.default
    try:
        return f.value(flags.pop(name))
    except FlagError as e:
        raise UserError(str(e)) from None


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
    return render(command, COMMANDS[command], groups, preset, load_config(preset) if preset else None)


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

