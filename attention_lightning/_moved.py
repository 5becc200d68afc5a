"""The old import paths of modules that moved into ``attention_lightning.run`` and ``attention_lightning.viz``.

An old module is a few lines that set its ``__getattr__`` (PEP 562) to one of these: ``forward`` keeps its names
importable (``from attention_lightning.experiment import fit`` gives ``attention_lightning.run.commands.fit``);
``refuse`` answers each of its names with one ``ImportError`` line naming the module to import it from.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def forward(old: str, places: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that imports each name of ``places`` from the module it names."""

    def __getattr__(name: str) -> Any:
        if name not in places:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        return getattr(importlib.import_module(places[name]), name)

    return __getattr__


def refuse(old: str, places: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` whose names fail with one line naming the module that holds them now."""

    def __getattr__(name: str) -> Any:
        if name not in places:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        raise ImportError(f"{old}.{name} has moved: import it from {places[name]} "
                          f"(from {places[name]} import {name})")

    return __getattr__
