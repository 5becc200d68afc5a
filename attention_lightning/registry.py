"""One registry of models and datamodules by name: the CLI, the tests and the README table read it.

A new model is one file that decorates its class::

    @register_model("dham", "Differentiable hard attention: spatial softmax -> crop -> CNN")
    class DHAM(AttentionModel): ...

Modules under ``attention_lightning.models`` and ``datamodules`` are imported on first lookup, so
registering never needs an edit anywhere else.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, TypeVar
from collections.abc import Callable, Mapping

from .facts import DataFacts

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    description: str


_MODELS: dict[str, Entry] = {}
_DATAMODULES: dict[str, Entry] = {}
_PACKAGES = {"model": "attention_lightning.models", "datamodule": "datamodules"}
_loaded = False


class RegistryError(ValueError):
    """An unknown or duplicate name; the message lists the valid names."""


def _register(table: dict[str, Entry], kind: str, name: str, description: str) -> Callable[[type[T]], type[T]]:
    def wrap(cls: type[T]) -> type[T]:
        if name in table and table[name].cls.__qualname__ != cls.__qualname__:
            raise RegistryError(f"{kind} name {name!r} is registered twice ({table[name].cls} and {cls})")
        table[name] = Entry(name, cls, description)
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return wrap


def register_model(name: str, description: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a LightningModule available as ``--model=name``."""
    return _register(_MODELS, "model", name, description)


def register_datamodule(name: str, description: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a LightningDataModule available as ``--data=name``."""
    return _register(_DATAMODULES, "datamodule", name, description)


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in _PACKAGES.values():
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")


def _lookup(table: dict[str, Entry], kind: str, name: str) -> Entry:
    _load_all()
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise RegistryError(
            f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(sorted(table))} (see `python cli.py list`)"
        )
    return table[name]


def get_model(name: str) -> Entry:
    return _lookup(_MODELS, "model", name)


def get_datamodule(name: str) -> Entry:
    return _lookup(_DATAMODULES, "datamodule", name)


def models() -> list[Entry]:
    """All registered models, sorted by name."""
    _load_all()
    return [_MODELS[k] for k in sorted(_MODELS)]


def datamodules() -> list[Entry]:
    """All registered datamodules, sorted by name."""
    _load_all()
    return [_DATAMODULES[k] for k in sorted(_DATAMODULES)]


def data_facts(dm: Any) -> DataFacts:
    """What a built datamodule says about its data: ``dm.facts()``, or for a datamodule still on the older
    ``model_kwargs()`` the same facts read from it (with its ``class_names`` and ``digit_source`` if set)."""
    if hasattr(dm, "facts"):
        return dm.facts()
    provenance = {"digit_source": dm.digit_source} if getattr(dm, "digit_source", None) is not None else {}
    names = getattr(dm, "class_names", None)
    return DataFacts(**dm.model_kwargs(), class_names=tuple(names) if names is not None else None,
                     provenance=provenance)


def build_model(name: str, facts: Mapping[str, Any], kwargs: Mapping[str, Any]) -> Any:
    """The model registered as ``name``, built from data facts and flags (see ``models.base.build_model``)."""
    from .models.base import build_model as build

    return build(get_model(name).cls, facts, kwargs)
